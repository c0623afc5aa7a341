import math

import pytest

from curation.prompts import templates
from curation.prompts.templates import PromptTemplate, TemplateError, breakdown, parse_value

SLOTS = {
    "subject": ["a corgi", "a robot", "an astronaut"],
    "action": ["riding a bicycle", "eating ramen"],
    "setting": ["in a park", "on the moon", "in a kitchen", "at the beach"],
    "emotion": ["happy", "sleepy"],
}
PATTERN = "{subject} {action} {setting}, {emotion}"


def test_exhaustive_expansion_is_the_product_of_list_sizes_and_records_slots():
    template = PromptTemplate(PATTERN, SLOTS)
    prompts = template.expand()
    assert template.size == 3 * 2 * 4 * 2 == len(prompts)
    assert len({p.text for p in prompts}) == len(prompts)
    assert prompts[0].text == "a corgi riding a bicycle in a park, happy"
    assert prompts[1].slots == {
        "subject": "a corgi",
        "action": "riding a bicycle",
        "setting": "in a park",
        "emotion": "sleepy",
    }
    for p in prompts:
        assert p.text == PATTERN.format(**p.slots)
    assert breakdown(prompts, "subject") == {"a corgi": 16, "a robot": 16, "an astronaut": 16}


def test_sampling_is_deterministic_under_a_seed_and_unique():
    template = PromptTemplate(PATTERN, SLOTS)
    first = template.sample(20, seed=7)
    assert [p.text for p in first] == [p.text for p in template.sample(20, seed=7)]
    assert [p.text for p in first] != [p.text for p in template.sample(20, seed=8)]
    assert len({p.text for p in first}) == 20


def test_sampling_more_than_the_space_takes_every_combination_then_repeats():
    template = PromptTemplate(PATTERN, SLOTS)
    prompts = template.sample(template.size + 10, seed=0)
    texts = [p.text for p in prompts]
    assert len(texts) == template.size + 10
    assert set(texts[: template.size]) == {p.text for p in template.expand()}


def test_zero_weight_values_are_never_sampled_but_are_expanded():
    template = PromptTemplate(
        "{subject}, {emotion}", {"subject": ["a cat", "a dog"], "emotion": ["happy", "angry:0"]}
    )
    assert template.size == 4 and template.positive_size == 2
    assert all(p.slots["emotion"] == "happy" for p in template.sample(50, seed=1))
    assert {p.slots["emotion"] for p in template.expand()} == {"happy", "angry"}


@pytest.mark.parametrize("unique", [False, True])
def test_weights_are_honoured_statistically(unique):
    # 2 x 300 x 300 = 180,000 combinations: sampling 6,000 uniquely barely depletes any subject.
    template = PromptTemplate(
        "{subject} {a} {b}",
        {
            "subject": ["a cat:3", "a dog:1"],
            "a": [f"a{i}" for i in range(300)],
            "b": [f"b{i}" for i in range(300)],
        },
    )
    n = 6000
    share = breakdown(template.sample(n, seed=3, unique=unique), "subject")["a cat"] / n
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)  # within 4 binomial s.d.


def test_unique_sampling_of_a_space_too_large_to_enumerate(monkeypatch):
    monkeypatch.setattr(templates, "ENUMERATE_LIMIT", 1000)
    template = PromptTemplate(
        "{subject} {a}",
        {"subject": [("a cat", 1), ("a dog", 3)], "a": [f"x{i}" for i in range(2000)]},
    )
    prompts = template.sample(1500, seed=5)
    assert len({p.text for p in prompts}) == 1500
    assert [p.text for p in prompts] == [p.text for p in template.sample(1500, seed=5)]
    share = breakdown(prompts, "subject")["a dog"] / 1500
    # 3:1 by weight; drawing 1,500 of 4,000 without repeats pulls it a little towards 1:1.
    assert 0.66 < share < 0.76


def test_empty_optional_values_leave_no_stray_separators():
    template = PromptTemplate(
        "{subject} {action}, {emotion}",
        {"subject": ["a cat"], "action": ["", "jumping"], "emotion": ["", "happy"]},
    )
    assert [p.text for p in template.expand()] == [
        "a cat",
        "a cat, happy",
        "a cat jumping",
        "a cat jumping, happy",
    ]


def test_literal_braces_and_repeated_slots():
    template = PromptTemplate("{{logo}} {x} and {x}", {"x": ["a", "b"]})
    assert [p.text for p in template.expand()] == ["{logo} a and a", "{logo} b and b"]


def test_value_weight_parsing():
    assert parse_value("a cat:2.5", "s").weight == 2.5
    assert parse_value("a cat:2.5", "s").value == "a cat"
    assert parse_value("text: hello", "s").value == "text: hello"
    assert parse_value("a clock at 10:30:1", "s").value == "a clock at 10:30"
    assert parse_value(("a:b", 2), "s").weight == 2.0


@pytest.mark.parametrize(
    ("pattern", "values", "message"),
    [
        ("{subject} {mood}", {"subject": ["a cat"]}, "uses slot.*mood.*no value list"),
        ("{subject}", {"subject": []}, "'subject' has an empty value list"),
        ("{subject}", {"subject": ["a cat:-1"]}, "'a cat' has weight -1.0"),
        ("{subject}", {"subject": [("a cat", -2)]}, "weights must be finite and >= 0"),
        (
            "{subject}",
            {"subject": [("a cat", "heavy")]},
            "'heavy' of value 'a cat' is not a number",
        ),
        ("{subject}", {"subject": ["a cat:0", "a dog:0"]}, "every weight is zero"),
        ("{subject}", {"subject": ["a cat", "a cat"]}, "lists 'a cat' more than once"),
        ("{subject", {"subject": ["a cat"]}, "literal brace"),
        ("{subject:>10}", {"subject": ["a cat"]}, "plain name"),
        ("{}", {}, "plain name"),
        ("no slots here", {}, "has no"),
        ("{subject}", {"subject": [3]}, "must be a string"),
    ],
)
def test_clear_errors(pattern, values, message):
    with pytest.raises(TemplateError, match=message):
        PromptTemplate(pattern, values)


def test_expansion_limit_and_negative_n():
    template = PromptTemplate(
        "{a} {b}", {"a": [str(i) for i in range(100)], "b": [str(i) for i in range(100)]}
    )
    with pytest.raises(TemplateError, match="10,000 prompts, over the limit of 1,000"):
        template.expand(limit=1000)
    with pytest.raises(TemplateError):
        template.sample(-1, seed=0)
    assert template.sample(0, seed=0) == []
