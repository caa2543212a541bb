"""``lightmem eval`` from the command line: a small real run and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.cli import main


def test_eval_locomo_one_conversation_bm25(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res"
    code = main(["eval", "locomo", "--data", str(data_dir / "locomo10.json"), "--limit-conversations", "1",
                 "--categories", "2,4", "--k", "1,5", "--systems", "raw-bm25", "--no-progress", "--results-dir", str(out)])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    assert report["options"]["ks"] == [1, 5]
    assert report["options"]["categories"] == ["2", "4"]
    assert report["input"]["conversations"] == 1
    (s,) = report["systems"]
    assert set(s["metrics_by_category"]) == {"2", "4"}
    assert s["questions_scored"] == 37 + 70
    assert "--limit-conversations 1" in report["command"]
    assert (out / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    assert "| raw-bm25 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["locomo", "--data", "{tmp}/missing.json"], "missing.json"),
        (["locomo", "--data", "{data}/longmemeval_s_sample.json"], "not LoCoMo"),
        (["longmemeval", "--data", "{data}/locomo10.json"], "not LongMemEval"),
        (["locomo", "--k", "1,five"], "--k"),
        (["locomo", "--k", "0,5"], "--k"),
        (["locomo", "--systems", "default,mem0"], "mem0"),
        (["locomo", "--config", "{tmp}/nope.yaml"], "nope.yaml"),
        (["locomo", "--limit-conversations", "0"], "--limit-conversations"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    args: list[str], message: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    argv = ["eval", *[a.format(tmp=tmp_path, data=data_dir) for a in args], "--no-progress", "--results-dir", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unknown_dataset_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "msc"])
    assert "invalid choice" in capsys.readouterr().err


def test_llm_endpoint_from_flags_or_from_an_llm_memory_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from lightmem_core.config import parse_config
    from producers.eval.commands import llm_endpoint

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    verbatim = parse_config({"memory_manager": {"model_name": "verbatim"}})
    none = argparse.Namespace(llm_model=None, llm_base_url=None, judge_model=None)
    assert llm_endpoint(none, verbatim) is None
    flags = argparse.Namespace(llm_model="gpt-4o-mini", llm_base_url="http://h/v1", judge_model="gpt-4o")
    ep = llm_endpoint(flags, verbatim)
    assert ep is not None and (ep.model, ep.base_url, ep.api_key, ep.judge) == ("gpt-4o-mini", "http://h/v1", "sk-test", "gpt-4o")
    llm = parse_config({"memory_manager": {"model_name": "deepseek",
                                           "configs": {"model": "deepseek-chat", "deepseek_base_url": "http://d/v1"}}})
    ep = llm_endpoint(none, llm)
    assert ep is not None and (ep.model, ep.base_url, ep.judge) == ("deepseek-chat", "http://d/v1", "deepseek-chat")
