"""The saved KV tiers on their own: bounds in bytes, spilling RAM to disk, pins, and files that must never be
loaded (corrupt, cut short, another model's)."""

from __future__ import annotations

import json

from qwend.engine.kv_tiers import MAGIC, KvTiers

KEY = "model-a"


def tiers(tmp_path, ram=1000, disk=10_000, key=KEY) -> KvTiers:
    return KvTiers(tmp_path, key, ram_bytes=ram, disk_bytes=disk)


def state(fill: int, size: int = 400) -> bytearray:
    return bytearray([fill]) * size


def files(tmp_path, key=KEY) -> list:
    return sorted((tmp_path / key).glob("*.kv"))


def test_the_longest_shared_start_is_found(tmp_path):
    saved = tiers(tmp_path)
    saved.put([1, 2, 3], state(1))
    saved.put([1, 5, 6, 7], state(2))
    found, shared = saved.best([1, 5, 6, 9])
    assert found.tokens == (1, 5, 6, 7) and shared == 3
    assert saved.best([9, 9]) == (None, 0)
    assert saved.covers([1, 5]) and not saved.covers([1, 5, 6, 7, 8])


def test_a_longer_state_of_the_same_conversation_replaces_the_shorter(tmp_path):
    saved = tiers(tmp_path)
    saved.put([1, 2], state(1))
    saved.put([1, 2, 3, 4], state(2))
    assert [s.tokens for s in saved.states] == [(1, 2, 3, 4)]


def test_a_recurrent_models_states_serve_only_prompts_that_go_on_past_all_of_them(tmp_path):
    saved = KvTiers(tmp_path, KEY, ram_bytes=10_000, disk_bytes=0, whole_only=True)
    saved.put([1, 2], state(1))
    saved.put([1, 2, 3, 4], state(2))  # a longer state keeps the shorter: the point to go back to
    assert [s.tokens for s in saved.states] == [(1, 2), (1, 2, 3, 4)]
    assert saved.best([1, 2, 3, 4, 5])[0].tokens == (1, 2, 3, 4)
    assert saved.best([1, 2, 3, 9])[0].tokens == (1, 2)  # not the one sharing 3 tokens: it cannot be cut back
    assert saved.best([1, 2, 3, 4]) == (saved.states[0], 2)  # the prompt's last token must be read
    assert saved.best([1, 9]) == (None, 0)
    assert saved.covers([1, 2]) and not saved.covers([1, 2, 3])


def test_ram_over_its_bound_spills_the_least_recently_used_to_disk(tmp_path):
    saved = tiers(tmp_path, ram=1000)
    for i in range(3):
        saved.put([i, i], state(i))
    in_ram = [s.tokens for s in saved.states if s.data is not None]
    assert in_ram == [(1, 1), (2, 2)] and len(files(tmp_path)) == 1
    first = next(s for s in saved.states if s.tokens == (0, 0))
    assert saved.read(first) == state(0)  # read back from disk, checked


def test_disk_over_its_bound_deletes_the_least_recently_used(tmp_path):
    saved = tiers(tmp_path, ram=0, disk=1000)
    for i in range(4):
        saved.put([i, i], state(i))
    assert [s.tokens for s in saved.states] == [(2, 2), (3, 3)] and len(files(tmp_path)) == 2


def test_without_a_disk_tier_what_ram_cannot_hold_is_dropped(tmp_path):
    saved = KvTiers(None, KEY, ram_bytes=500, disk_bytes=10_000)
    saved.put([1], state(1))
    saved.put([2], state(2))
    assert [s.tokens for s in saved.states] == [(2,)] and not (tmp_path / KEY).exists()


def test_pinned_states_are_never_dropped(tmp_path):
    saved = tiers(tmp_path, ram=500, disk=500)
    saved.put([7, 7], state(7), pinned=True)
    for i in range(3):
        saved.put([i], state(i))
    assert (7, 7) in [s.tokens for s in saved.states]
    saved.put([7, 7, 8], state(8))  # a conversation that starts with the pinned prompt leaves the pin in place
    assert (7, 7) in [s.tokens for s in saved.states]


def test_flushed_states_are_found_again_after_a_restart(tmp_path):
    saved = tiers(tmp_path)
    saved.put([1, 2, 3], state(5), pinned=True)
    saved.put([4, 5], state(6))
    saved.flush()
    again = tiers(tmp_path)
    found, shared = again.best([1, 2, 3, 4])
    assert shared == 3 and found.pinned and again.read(found) == state(5)
    assert again.read(again.best([4, 5])[0]) == state(6)


def test_a_corrupt_file_is_deleted_not_loaded(tmp_path):
    saved = tiers(tmp_path)
    saved.put([1, 2, 3], state(5))
    saved.flush()
    path = files(tmp_path)[0]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit pattern in the payload
    path.write_bytes(raw)
    again = tiers(tmp_path)
    found, _ = again.best([1, 2, 3])
    assert again.read(found) is None and not path.exists() and again.best([1, 2, 3]) == (None, 0)


def test_files_cut_short_or_not_ours_are_deleted_when_found(tmp_path):
    saved = tiers(tmp_path)
    saved.put([1, 2, 3], state(5))
    saved.flush()
    good = files(tmp_path)[0]
    folder = tmp_path / KEY
    (folder / "short.kv").write_bytes(good.read_bytes()[:-10])
    (folder / "junk.kv").write_bytes(b"not a state")
    (folder / "header.kv").write_bytes(MAGIC + b"{broken json\n")
    again = tiers(tmp_path)
    assert len(again.states) == 2  # the good file, and the short one until its payload is read
    short = next(s for s in again.states if s.path.name == "short.kv")
    assert again.read(short) is None and files(tmp_path) == [good]


def test_a_file_saved_for_another_model_is_deleted_not_loaded(tmp_path):
    other = tiers(tmp_path, key="model-b")
    other.put([1, 2, 3], state(5))
    other.flush()
    moved = tmp_path / KEY / "moved.kv"
    moved.parent.mkdir()
    moved.write_bytes(files(tmp_path, "model-b")[0].read_bytes())
    ours = tiers(tmp_path)
    assert ours.states == [] and not moved.exists()
    header = json.loads(files(tmp_path, "model-b")[0].read_bytes().split(b"\n")[1])
    assert header["model"] == "model-b"  # the other model's own file is left alone
