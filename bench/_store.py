"""A store that delegates every Store call to another: benches subclass it to time or
count one call and pass it to the library where a store goes (the seam, not a patch)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from dejavu.logic.store import Hits, NewSong, Store


class DelegatingStore:
    """Implements :class:`dejavu.logic.store.Store` by calling ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        return self.store.return_matches(hashes, song_ids)

    def count_matches(self, hashes: np.ndarray) -> np.ndarray:
        return self.store.count_matches(hashes)

    def get_songs_by_ids(self, song_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        return self.store.get_songs_by_ids(song_ids)

    def get_songs(self) -> list[dict[str, Any]]:
        return self.store.get_songs()

    def get_fingerprinted_sha1s(self) -> set[str]:
        return self.store.get_fingerprinted_sha1s()

    def store_songs(self, songs: Sequence[NewSong]) -> list[int | None]:
        return self.store.store_songs(songs)

    def delete_songs_by_id(self, song_ids: Iterable[int]) -> int:
        return self.store.delete_songs_by_id(song_ids)

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    def close(self) -> None:
        self.store.close()
