from pathlib import Path

import pytest

from curation.prompts.importers import (
    PromptImportError,
    PromptRow,
    RowError,
    clip_token_count,
    import_prompts,
    parse_prompts,
)

TOO_LONG = " ".join(["sparkly"] * 80)


def errors_by_line(result):
    return {(e.line, e.field) for e in result.errors}


def test_csv_keeps_good_rows_and_reports_bad_ones_by_line():
    data = (
        b"prompt,category,subject,tags\n"  # 1
        b"a cat on a skateboard,animals,cat,cute; fast\n"  # 2
        b",animals,dog,\n"  # 3: empty prompt
        b'"' + TOO_LONG.encode() + b'",misc,,\n'  # 4: over 77 tokens
        b"caf\xe9 au lait,food,,\n"  # 5: Latin-1 byte, not UTF-8
        b"a fox, in the snow,animals,fox,,extra\n"  # 6: unquoted comma -> too many fields
        b'"a dragon\nwith two lines",fantasy,dragon,\n'  # 7-8: one record over two lines
        b"   \n"  # 9: blank cells only -> empty prompt
        b"a lighthouse at dusk,places,,\n"  # 10
    )
    result = parse_prompts(data, "csv", source="set.csv")

    assert errors_by_line(result) == {
        (3, "prompt"),
        (4, "prompt"),
        (5, "prompt"),
        (6, "row"),
        (9, "prompt"),
    }
    assert [p.line for p in result.prompts] == [2, 7, 10]
    assert result.prompts[0] == PromptRow(
        text="a cat on a skateboard",
        line=2,
        category="animals",
        subject="cat",
        tags=("cute", "fast"),
    )
    assert result.prompts[1].text == "a dragon with two lines"
    assert result.prompts[2].subject is None
    messages = {e.line: e.message for e in result.errors}
    assert "over the tokenizer's limit of 77" in messages[4]
    assert "0xe9" in messages[5]
    assert result.error_messages()[0].startswith("set.csv: line 3, prompt:")


def test_csv_without_prompt_column_is_one_error_on_the_header():
    result = parse_prompts(b"text,category\na cat,animals\n", "csv", source="x.csv")
    assert result.prompts == []
    assert result.errors == [
        RowError(1, "prompt", "missing column 'prompt' in the header (found: text, category)")
    ]


def test_csv_short_row_missing_the_prompt_cell_and_bom_header():
    data = b"\xef\xbb\xbfcategory,prompt\nanimals\nanimals,a hedgehog\n"
    result = parse_prompts(data, "csv")
    assert result.errors == [RowError(2, "prompt", "missing")]
    assert [(p.text, p.category, p.line) for p in result.prompts] == [("a hedgehog", "animals", 3)]


def test_tsv_uses_tabs():
    result = parse_prompts(b"prompt\ttags\na cat, sitting\tx|y\n", "tsv")
    assert result.errors == []
    assert result.prompts[0].text == "a cat, sitting"
    assert result.prompts[0].tags == ("x", "y")


def test_jsonl_reports_each_bad_line_and_keeps_the_rest():
    data = (
        b'{"prompt": "a panda eating bamboo", "tags": ["cute", "cute", "animal"]}\n'  # 1
        b'{"prompt": "a broken line"\n'  # 2: malformed
        b"\n"  # 3: blank, skipped silently
        b'["not", "an", "object"]\n'  # 4
        b'{"category": "food"}\n'  # 5: no prompt
        b'{"prompt": 42}\n'  # 6
        b'{"prompt": "na\xefve art"}\n'  # 7: bad byte
        b'{"prompt": "a koala", "subject": ["koala"]}\n'  # 8: subject not a string
        b'{"prompt": "  a   teapot  ", "category": "objects", "subject": "teapot"}\r\n'  # 9
    )
    result = parse_prompts(data, "jsonl")
    assert errors_by_line(result) == {
        (2, "json"),
        (4, "json"),
        (5, "prompt"),
        (6, "prompt"),
        (7, "prompt"),
        (8, "subject"),
    }
    assert [(p.line, p.text) for p in result.prompts] == [
        (1, "a panda eating bamboo"),
        (9, "a teapot"),
    ]
    assert result.prompts[0].tags == ("cute", "animal")
    assert result.prompts[1].category == "objects"


def test_plain_text_skips_comments_and_blank_lines_but_keeps_line_numbers(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(
        b"# sticker prompts\r\n"  # 1
        b"a corgi in sunglasses\r\n"  # 2
        b"\r\n"  # 3
        b"a fox #2 in the snow\r\n"  # 4: '#' inside a prompt is text
        + TOO_LONG.encode()
        + b"\r\n"  # 5
        b"bad \xff\xfe bytes\r\n"  # 6
        b"a rocket"  # 7: no final newline
    )
    result = import_prompts(path)
    assert result.source == str(path)
    assert [(p.line, p.text) for p in result.prompts] == [
        (2, "a corgi in sunglasses"),
        (4, "a fox #2 in the snow"),
        (7, "a rocket"),
    ]
    assert errors_by_line(result) == {(5, "prompt"), (6, "prompt")}


def test_clip_token_count_matches_the_77_position_context():
    assert clip_token_count("a cat") == 4  # start, "a", "cat", end
    assert clip_token_count(TOO_LONG) > 77
    at_limit = " ".join(["cat"] * 75)
    assert clip_token_count(at_limit) == 77
    assert parse_prompts(at_limit.encode(), "txt").errors == []
    assert parse_prompts((at_limit + " cat").encode(), "txt").prompts == []


def test_custom_token_counter_and_limit():
    result = parse_prompts(
        b"one two\none two three\n", "txt", max_tokens=2, token_counter=lambda t: len(t.split())
    )
    assert [p.text for p in result.prompts] == ["one two"]
    assert result.errors[0].line == 2


def test_unknown_format_names_the_file(tmp_path: Path):
    path = tmp_path / "prompts.xlsx"
    path.write_bytes(b"")
    with pytest.raises(PromptImportError, match=r"prompts\.xlsx"):
        import_prompts(path)
    with pytest.raises(PromptImportError, match="unknown format"):
        parse_prompts(b"", "yaml", source="upload.yaml")
