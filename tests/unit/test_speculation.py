"""Prompt-lookup drafts (engine/speculation.py): what followed the last n tokens before, adapting in length."""

from qwend.engine.speculation import MAX_PAUSE, MIN_DRAFT, Backoff, NgramDrafter


def test_a_draft_is_what_followed_the_latest_earlier_occurrence():
    drafter = NgramDrafter([1, 2, 3, 4, 5, 6, 9, 1, 2, 3, 4, 5, 7, 8], ngrams=(3,))
    drafter.extend([1, 2, 3])
    drafter.accepted(8, 8)  # (drafts that held: the next may be long)
    assert drafter.draft(3) == [4, 5, 7]  # the latest occurrence of 1 2 3 went on 4 5 7, not 4 5 6
    assert drafter.draft(10) == [4, 5, 7, 8, 1, 2, 3]  # up to the sequence's end


def test_nothing_is_drafted_without_a_match_or_room():
    drafter = NgramDrafter([1, 2, 3, 4], ngrams=(3,))
    assert drafter.draft(8) == []  # 2 3 4 never occurred before
    drafter.extend([1, 2, 3])
    assert drafter.draft(0) == [] and NgramDrafter([1, 2], ngrams=(3,)).draft(8) == []


def test_the_length_follows_what_was_accepted():
    drafter = NgramDrafter(list(range(40)) + list(range(8)), max_draft=16, ngrams=(8,))
    assert len(drafter.draft(100)) == MIN_DRAFT  # short until a draft holds (a chance match wastes little)
    drafter.accepted(2, 2)
    assert len(drafter.draft(100)) == 2 * 2 + MIN_DRAFT
    drafter.accepted(6, 6)
    assert len(drafter.draft(100)) == 14
    drafter.accepted(14, 14)
    assert len(drafter.draft(100)) == 16  # at most max_draft
    drafter.accepted(16, 0)
    assert drafter.draft(100) == []  # a miss: a step's pause,
    assert len(drafter.draft(100)) == MIN_DRAFT  # then a short draft
    drafter.accepted(2, 2)
    assert len(drafter.draft(100)) == 2 * 2 + MIN_DRAFT  # about twice the run that held
    drafter.accepted(6, 6)
    drafter.accepted(14, 14)
    assert len(drafter.draft(100)) == 16


def test_a_shorter_match_drafts_where_the_longest_did_not_occur():
    drafter = NgramDrafter([9, 9, 5, 6, 1, 2, 3, 4], ngrams=(4, 2))
    drafter.extend([7, 7, 5, 6])  # 7 7 5 6 never occurred; 5 6 did, followed by 1 2
    assert drafter.draft(3) == [1, 2]


def test_misses_pause_drafting_longer_each_time_until_a_draft_holds():
    backoff = Backoff()
    pauses = []
    for _ in range(6):
        backoff.fared(0)
        pauses.append(sum(1 for _ in iter(lambda: backoff.ready(), True)))  # steps refused before the next one
    assert pauses == [1, 3, 7, 15, MAX_PAUSE, MAX_PAUSE]
    backoff.fared(0)
    backoff.fared(3)  # a draft that held: no pause
    assert backoff.ready()
