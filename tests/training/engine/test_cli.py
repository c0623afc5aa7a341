import json

from training.engine.__main__ import main


def test_cli_writes_tiny_base_trains_and_generates(tmp_path, capsys, toy_datasets):
    assert main(["tiny-base", str(tmp_path / "base")]) == 0
    assert (tmp_path / "base" / "model_index.json").is_file()
    config = {
        "recipe": "domain",
        "base_model": str(tmp_path / "base"),
        "output_dir": str(tmp_path / "run"),
        "datasets": {"domain": toy_datasets["domain"]},
        "adapter": "lora",
        "resolution": 32,
        "batch_size": 2,
        "steps": 2,
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "run.json"), "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["step"] == 2
    out = tmp_path / "images"
    args = [
        "generate",
        "--checkpoint",
        summary["checkpoint_path"],
        "--prompt",
        "a cat",
        "--seeds",
        "0",
        "1",
    ]
    assert (
        main([*args, "--out", str(out), "--steps", "2", "--resolution", "32", "--device", "cpu"])
        == 0
    )
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(
        (out / json.loads(line)["file_name"]).is_file() for line in lines
    )

    assert (
        main(
            [
                "export",
                summary["checkpoint_path"],
                "--format",
                "kohya",
                "--out",
                str(tmp_path / "k"),
            ]
        )
        == 0
    )
    assert (tmp_path / "k" / "lora_kohya.safetensors").is_file()


def test_cli_refuses_a_broken_base_model_with_a_message(tmp_path, capsys, toy_datasets):
    (tmp_path / "base").mkdir()
    config = {
        "recipe": "domain",
        "base_model": str(tmp_path / "base"),
        "output_dir": str(tmp_path / "run"),
        "datasets": {"domain": toy_datasets["domain"]},
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "run.json"), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "missing model_index.json" in error and "Traceback" not in error
