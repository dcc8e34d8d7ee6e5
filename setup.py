"""Packaging for dejavu (distribution name PyDejavu, as the original)."""
import re

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as fh:
    long_description = fh.read()
with open("dejavu/version.py", encoding="utf-8") as fh:
    version = re.search(r'__version__ = "([^"]+)"', fh.read()).group(1)

setup(
    name="PyDejavu",
    version=version,
    description="Audio fingerprinting and recognition: name a song and the position in it from a few seconds of audio",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["dejavu", "dejavu.*"]),
    install_requires=["numpy>=1.22", "scipy>=1.8", "tqdm>=4.60"],
    extras_require={
        "mysql": ["mysqlclient>=2.1"],
        "postgres": ["psycopg2>=2.9"],
        "mic": ["PyAudio>=0.2.13"],
        "eval": ["matplotlib>=3.5"],
        "all": ["mysqlclient>=2.1", "psycopg2>=2.9", "PyAudio>=0.2.13", "matplotlib>=3.5"],
    },
    entry_points={"console_scripts": [
        "dejavu=dejavu.cli:run",
        "dejavu-eval=dejavu.evaluation.cli:run",
    ]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Analysis",
    ],
)
