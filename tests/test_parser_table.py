"""Hand-written answers with their expected parse, for each vocabulary.

Each answer is written with markers: "§" where the action key starts and
"«" "»" around the expected value span; the markers are removed before
parsing. "@A" is replaced by an action name of the vocabulary, "@U" by the
same name upper-cased and "@B" by a different name.
"""

from __future__ import annotations

import pytest

from vlmrl_fast import parse_actions

NUMBERLINE = ["-", "+"]
BLACKJACK = ["stand", "hit"]
EZPOINTS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "*", "="]
POINTS24 = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "-", "*", "/", "(", ")", "="]
ALFWORLD = [
    "go to cabinet 1",
    "go to cabinet 10",
    "open fridge 1",
    "take apple 1 from countertop 2",
    "heat apple 1 with microwave 1",
    "look",
    "inventory",
    "examine countertop 2",
]

# (answer with markers, True when it names @A / False when invalid)
SHAPES: list[tuple[str, bool]] = [
    ('{"thoughts": "ok", §"action": "«@A»"}', True),
    ("{'thoughts': 'ok', §'action': '«@A»'}", True),
    ("§action: «@A»", True),
    ("§Action: «@A»\n", True),
    ("§ACTION : «@A»", True),
    ('{§"action" : "«@A»",}', True),  # trailing comma
    ('{"thoughts": "x", §"action": "«@A»"', True),  # missing closing brace
    ('{"thoughts": "x", §"action": "«@A»', True),  # unterminated string
    ('```json\n{"thoughts": "x", §"action": "«@A»"}\n```', True),  # code fence
    ('{"thoughts": "x", §"action": "«@A»"}<|im_end|>', True),  # chat end token
    ('{"thoughts": "x", §"action": "«@A»"}</s>', True),
    ('{"thoughts": "x", §"action": ["«@A»"]}', True),  # one-element list
    ("{'thoughts': 'x', §'action': [ '«@A»', ]}", True),
    ('{"thoughts": "x", §"action":\n    "«@A»"\n}', True),  # pretty-printed
    ('{"thoughts": "\x00\x07\x1b[0m bell", §"action": "«@A»"}', True),  # control chars
    ('{"thoughts": "Überlegung 😀 ß 白 \u2028", §"action": "«@A»"}', True),  # Unicode
    ('{"thoughts": "x", §"action": "  «@A»  "}', True),
    ('{"action": "nothing", "thoughts": "x", §"action": "«@A»"}', True),  # last key wins
    ('{"thoughts": "the action: is hard", §"action": "«@A»"}', True),
    ('{"thoughts": "x", §"action": "«@A.»"}', True),  # trailing period
    ('{"thoughts": "x", §"action": "«@U»"}', True),  # case
    ('{"thoughts": "x", §"action": "«I choose @A now»"}', True),  # token rule
    ('{"thoughts": "x", §"action": «@A»}', True),  # unquoted, ended by }
    ('{\r\n"thoughts": "x",\r\n§"action": "«@A»"\r\n}', True),
    ('§"action":"«@A»"', True),
    ("<think>hmm</think>\n§'action' :\t'«@A»'", True),
    ('{\n  "thoughts": "x",\n  §"ACTION": "«@A»"\n}<|eot_id|>', True),
    ('{"thoughts": "x", §"action": "«@A»"}\nI hope this helps.', True),
    ('{"thoughts": "x", §"action": "«@A»"}, "action" is my choice', True),  # later word, no colon
    ('{"thoughts": "x", §"action": "\t«@A»\u00a0"}', True),  # tab, no-break space
    # invalid
    ('{"thoughts": "@A"}', False),
    ('{"thoughts": "x", §"action": ""}', False),
    ('{"thoughts": "x", §"action": ', False),
    ('{"thoughts": "x", §"action": []}', False),
    ('{"thoughts": "x", §"action": "  "}', False),
    ('{"thoughts": "x", §"action": "«nothing»"}', False),
    ('{"action": "@A", §"action": "«nothing»"}', False),
    ('{"thoughts": "x", §"action": "«@A or @B»"}', False),
    ('{"thoughts": "x", §"action": ["«@A", "@B»"]}', False),
    ('{"thoughts": "x", "actions": "@A"}', False),
    ("reaction: @A", False),
    ('{"next action": "@A"}', False),
    ("§action:\n}", False),
    ("The action is @A.", False),  # no key
    ("", False),
]

# Vocabulary-specific answers: (answer with markers, expected name or None).
SPECIFIC: dict[str, list[tuple[str, str | None]]] = {
    "numberline": [
        ('§"action": "«-1»"', "-"),
        ('§"action": "«+1»"', "+"),
        ('§"action": «+»', "+"),
        ('§"action": "«plus»"', None),
        ('§"action": "«add one»"', None),
        ('§"action": "«+-»"', None),
        ('§"action": "«\u2212»"', None),  # Unicode minus sign is not "-"
        ('§"action": "«++»"', "+"),  # the same action twice
        ('§"action": "\\"«-»\\""', "-"),  # escaped quotes inside the value
        ('§action: «- (move down)»', "-"),
        ('{"current number": 2, "target number": 4, §"action": "«+»"}', "+"),
        ('§"action": "«- or +»"', None),
        ('§"action": "«-»" or "+"', "-"),  # the paper's format copied
        ('§"action": ["«-", "+»"]', None),
        ('§"action": ["«+", "+»"]', "+"),
        ('§"action": "«0»"', None),
        ('§"action": «1»', None),
    ],
    "blackjack": [
        ('§"action": "«white»"', None),
        ('§"action": "«stands»"', None),
        ('§"action": "«hitting»"', None),
        ('§"action": "«Hit!»"', "hit"),
        ('§"action": "«HIT ME»"', "hit"),
        ('§"action": "«stand.»"', "stand"),
        ('§"action": "«hit-stand»"', None),
        ('§"action": "«I would not hit»"', "hit"),
        ('§"action": "«shit»"', None),
        ('§"action": "«hit_me»"', None),  # "_" is a word character
        ('§"action": «hit», "confidence": 0.9', "hit"),
        ('§"action": "«st and»"', None),
        ('§"action": "«stand»"}\n§action: «hit»', "hit"),
        ('§"Action": "«Stand»"', "stand"),
        ('§"action": "«hit (I have 12)»"', "hit"),
        ('§"action": "«ｈｉｔ»"', None),  # full-width letters are other characters
        ('§"action": "«hit»",\n}', "hit"),
    ],
    "ezpoints": [
        ('§"action": «10»', "10"),
        ('§"action": "«10»"', "10"),
        ('§"action": "«1»"', "1"),
        ('§"action": "«110»"', None),
        ('§"action": "«01»"', None),
        ('§"action": "«12»"', None),
        ('§"action": "«x»"', None),
        ('§"action": "«*»"', "*"),
        ('§"action": "«=»"', "="),
        ('§"action": "«5 + 7»"', None),
        ('§"action": "«two»"', None),
        ('§"action": "«10.»"', "10"),
        ('§"action": ["«10»"]', "10"),
        ('§"action": [«10»]', "10"),
        ('§"action": "«number 5»"', "5"),
        ('{"cards": [5, 7], "current formula": "5+", §"action": "«7»"}', "7"),
        ('§"action": "«-»"', None),  # not an EZPoints action
    ],
    "points24": [
        ('§"action": "«(»"', "("),
        ('§"action": "«)»"', ")"),
        ('§"action": "«/»"', "/"),
        ('§"action": "«-»"', "-"),
        ('§"action": "«(10»"', None),
        ('§"action": "«3)»"', None),
        ('§"action": "«8/3»"', None),
        ('§"action": "«÷»"', None),
        ('§"action": «10», "thoughts": "x"', "10"),
        ('§"action": "«10»"', "10"),
        ('§"action": "«9»"', "9"),
        ('§"action": "«13»"', None),
        ('§"action": "«()»"', None),
        ('{"cards": ["Q", 4, 3, "A"], "current formula": "(10", §"action": "«-»"}', "-"),
        ('§"action": "«=» "', "="),
        ('§"action": "\'«=»\'"', "="),  # quotes inside the quotes are trimmed
        ('§"action": " «(» "', "("),
    ],
    "alfworld": [
        ('§"action": "«Take  apple 1 from countertop 2.»"', "take apple 1 from countertop 2"),
        ('§"action": "«go to cabinet 10»"', "go to cabinet 10"),
        ('§"action": "«go to cabinet 1.»"', "go to cabinet 1"),
        ('§"action": "«go to cabinet»"', None),
        ('§"action": "«go to cabinet 11»"', None),
        ('§"action": "«lookup»"', None),
        ('§"action": "«look around»"', "look"),
        ('§"action": "«take apple 1 from countertop 2 and then look»"', None),
        ('§"action": "«open the fridge 1»"', None),
        ('§"action": "«go\tto  cabinet 1»"', "go to cabinet 1"),  # whitespace runs collapse
        ('§"action": "«go\tto»\ncabinet 1"', None),  # a quoted value ends at a line break
        ('§"action": "«take apple 1 from countertop 2,»"', "take apple 1 from countertop 2"),
        ('§action: «inventory»', "inventory"),
        ('§"action": "«EXAMINE COUNTERTOP 2»"', "examine countertop 2"),
        ('§"action": "«heat apple 1 with microwave 1 .»"', "heat apple 1 with microwave 1"),
        ('§"action": "«put apple 1 in/on fridge 1»"', None),
        ('§"action": ["«open fridge 1»"]', "open fridge 1"),
        ('§"action": "«go to cabinet 1»"}', "go to cabinet 1"),
    ],
}

VOCABS = {
    "numberline": NUMBERLINE,
    "blackjack": BLACKJACK,
    "ezpoints": EZPOINTS,
    "points24": POINTS24,
    "alfworld": ALFWORLD,
}


def unmark(s: str) -> tuple[str, int, tuple[int, int]]:
    """Remove the markers; return the text, key_start and value_span."""
    out: list[str] = []
    key, span = -1, [-1, -1]
    for c in s:
        if c == "§":
            key = len(out)
        elif c == "«":
            span[0] = len(out)
        elif c == "»":
            span[1] = len(out)
        else:
            out.append(c)
    return "".join(out), key, (span[0], span[1])


def table(vocab: str) -> list[tuple[str, str | None]]:
    names = VOCABS[vocab]
    rows: list[tuple[str, str | None]] = []
    for k, (shape, valid) in enumerate(SHAPES):
        a = names[k % len(names)]
        b = names[(k + 1) % len(names)]
        text = shape.replace("@A", a).replace("@U", a.upper()).replace("@B", b)
        rows.append((text, a if valid else None))
    return rows + SPECIFIC[vocab]


@pytest.mark.parametrize("vocab", list(VOCABS))
def test_table(vocab: str) -> None:
    rows = table(vocab)
    assert len(rows) >= 60
    names = VOCABS[vocab]
    texts, keys, spans = zip(*(unmark(r) for r, _ in rows))
    parsed = parse_actions(list(texts), names)
    for i, (row, expected) in enumerate(rows):
        want = -1 if expected is None else names.index(expected)
        got = (int(parsed.index[i]), int(parsed.key_start[i]), tuple(int(x) for x in parsed.value_span[i]))
        assert got == (want, keys[i], spans[i]), f"row {i}: {row!r}"
        assert bool(parsed.valid[i]) == (want >= 0)
    assert parsed.num_invalid == sum(e is None for _, e in rows)
