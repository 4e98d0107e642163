"""Training data formats: JSONL streaming, append safety, reference importers, configs."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from rstar_math.format import PromptTemplate, split_solution, step_chunks
from rstar_math.training import (
    JsonlWriter,
    PPMTrainingConfig,
    PreferencePair,
    SFTRecord,
    SFTTrainingConfig,
    import_reference_pairs,
    import_reference_sft,
    load_config,
    read_jsonl,
    read_pairs,
    read_sft_records,
    read_trees,
    split_step_chunks,
    write_jsonl,
)
from rstar_math.training.records import REFERENCE_ASSISTANT_HEADER, REFERENCE_USER_PREFIX
from rstar_math.tree import StepKind, Tree

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rstar"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")


def sample_pair(i: int = 0) -> PreferencePair:
    return PreferencePair(
        question=f"What is {i} + 1?",
        prefix_steps=["<code>\n# step 1\nx = 1\n<end_of_step>"],
        pos=[f"\nprint({i} + 1)\n<end_of_code>\n<output>{i + 1}<end_of_output>\n"],
        neg=["\nprint(x +)\n<end_of_code>", "\nprint(0)\n<end_of_code>"],
        meta={"node_id": 3, "pos_q": [0.5], "neg_q": [-1.0, -0.5], "ünï": "cödé"},
    )


def test_records_round_trip(tmp_path):
    pairs = [sample_pair(i) for i in range(5)]
    sft = [SFTRecord(f"q{i}", f"<code>\nprint({i})\n<end_of_code>", {"i": i}) for i in range(3)]
    assert write_jsonl(tmp_path / "p.jsonl", pairs) == 5
    assert write_jsonl(tmp_path / "s.jsonl.gz", sft) == 3
    assert list(read_pairs(tmp_path / "p.jsonl")) == pairs
    assert list(read_sft_records(tmp_path / "s.jsonl.gz")) == sft
    with gzip.open(tmp_path / "s.jsonl.gz", "rt", encoding="utf-8") as fh:
        assert json.loads(fh.readline())["question"] == "q0"
    # one JSON object per line, unicode kept readable
    lines = (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and "cödé" in lines[0]
    assert sample_pair().num_combos == 2
    assert sample_pair().combos()[1] == (sample_pair().pos[0], sample_pair().neg[1])


def test_trees_round_trip(tmp_path):
    t = Tree("q", reference="1")
    n = t.add_child(t.root, text="<code>\nx=1\n<end_of_step>", kind=StepKind.CODE, code="x=1")
    n.visits, n.value_sum = 2, 1.5
    write_jsonl(tmp_path / "t.jsonl", [t, t.to_dict()])
    back = list(read_trees(tmp_path / "t.jsonl"))
    assert [b.to_dict() for b in back] == [t.to_dict(), t.to_dict()]


def test_pair_validation():
    with pytest.raises(ValueError, match="at least one"):
        PreferencePair("q", [], [], ["x"])
    with pytest.raises(ValueError, match="level"):
        PreferencePair("q", [], ["a"], ["b"], level="node")  # type: ignore[arg-type]
    bare = PreferencePair("q", [], "a", "b")  # a single continuation may be given bare
    assert bare.pos == ["a"] and bare.neg == ["b"]
    with pytest.raises(ValueError, match="missing the field"):
        PreferencePair.from_dict({"question": "q", "pos": ["a"]})
    with pytest.raises(ValueError, match="missing the field"):
        SFTRecord.from_dict({"question": "q"})


def test_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    it = read_jsonl(path)
    assert next(it) == {"a": 1}
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        next(it)


def test_append_after_crash_drops_partial_line(tmp_path, caplog):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [sample_pair(0), sample_pair(1)])
    with open(path, "a", encoding="utf-8") as fh:  # a writer killed mid-record
        fh.write('{"question": "half-writ')
    with caplog.at_level("WARNING"), JsonlWriter(path, append=True) as w:
        w.write(sample_pair(2))
    assert "incomplete last line" in caplog.text
    assert [p.question for p in read_pairs(path)] == [f"What is {i} + 1?" for i in range(3)]
    # appending to a clean file keeps everything
    write_jsonl(path, [sample_pair(3)], append=True)
    assert len(list(read_pairs(path))) == 4


def test_writer_flushes_whole_lines(tmp_path):
    path = tmp_path / "live.jsonl"
    with JsonlWriter(path) as w:
        w.write(sample_pair(0))
        # readable by another reader before the writer closes
        assert path.read_text(encoding="utf-8").endswith("\n")
        assert len(list(read_pairs(path))) == 1
    with pytest.raises(ValueError, match="closed"):
        w.write(sample_pair(1))


def test_reading_streams_in_constant_memory(tmp_path):
    path = tmp_path / "many.jsonl"
    n = 100_000
    write_jsonl(path, ({"question": f"q{i}", "response": "r" * 20} for i in range(n)))
    reader = read_sft_records(path)
    assert not isinstance(reader, list) and next(reader).question == "q0"
    tracemalloc.start()
    count = sum(1 for _ in read_sft_records(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == n
    assert peak < 2_000_000, f"reading {n} records peaked at {peak} bytes"


# --------------------------------------------------------------------------- chunks


def test_split_step_chunks_matches_step_chunks():
    text = (
        "<code>\n# Step 1\nx = 2 * 20\n<end_of_step>\n\n# Step 2\ny = x + 1\n<end_of_step>"
        "\n# Now print the final answer\nprint(y)\n<end_of_code>\n<output>41<end_of_output>\n"
        "<answer>The answer is \\boxed{41}.<end_of_answer>"
    )
    chunks = split_step_chunks(text)
    assert "".join(chunks) == text
    assert chunks == [
        "<code>\n# Step 1\nx = 2 * 20\n<end_of_step>",
        "\n\n# Step 2\ny = x + 1\n<end_of_step>",
        "\n# Now print the final answer\nprint(y)\n<end_of_code>\n<output>41<end_of_output>\n",
        "<answer>The answer is \\boxed{41}.<end_of_answer>",
    ]
    # the same chunks format.step_chunks produces from parsed nodes
    tree = Tree("q")
    node = tree.root
    for step in split_solution(text):
        node = tree.add_child(node, text=step.text, kind=step.kind, code=step.code)
    tree.nodes[3].output = "41"
    assert step_chunks(tree.path(node)) == chunks
    assert split_step_chunks("no marker") == ["no marker"]
    assert split_step_chunks("") == []
    assert "".join(split_step_chunks("a<end_of_code> tail")) == "a<end_of_code> tail"


# --------------------------------------------------------------------------- reference files


@needs_data
def test_import_reference_sft():
    recs = list(import_reference_sft(DATA / "sft_data_examples.json"))
    raw = json.loads((DATA / "sft_data_examples.json").read_text(encoding="utf-8"))
    assert len(recs) == len(raw) == 8
    for rec, item in zip(recs, raw, strict=True):
        assert rec.question == item["query"] and rec.response == item["response"]
        steps = split_solution(rec.response)
        assert steps[0].text.startswith("<code>")
        assert steps[-1].kind is StepKind.ANSWER and steps[-1].answer
        assert "".join(split_step_chunks(rec.response)) == rec.response


@needs_data
def test_import_reference_sft_jsonl(tmp_path):
    raw = json.loads((DATA / "sft_data_examples.json").read_text(encoding="utf-8"))
    write_jsonl(tmp_path / "sft.jsonl", raw)
    assert [r.question for r in import_reference_sft(tmp_path / "sft.jsonl")] == [
        r["query"] for r in raw
    ]


@needs_data
def test_import_reference_pairs():
    raw = json.loads((DATA / "rm_data_examples.json").read_text(encoding="utf-8"))
    pairs = list(import_reference_pairs(DATA / "rm_data_examples.json"))
    assert len(pairs) == len(raw) == 5
    for pair, item in zip(pairs, raw, strict=True):
        assert len(pair.pos) == len(pair.neg) == 1
        assert pair.meta["pos_count"] == item["pos_count"]
        # lossless: the reference's text is our fields with its own header put back
        header = REFERENCE_ASSISTANT_HEADER
        original = item["prompt"] + item["pos"]
        rebuilt = REFERENCE_USER_PREFIX + pair.question + header + pair.prefix + pair.pos[0]
        assert rebuilt == original
        assert not pair.question.startswith(REFERENCE_USER_PREFIX)
        assert "<|assistant|>" not in pair.question + pair.pos[0] + pair.neg[0]
    # the first three are whole-solution pairs, the last two next-step pairs after a prefix
    assert [p.level for p in pairs] == ["answer", "answer", "answer", "step", "step"]
    first = pairs[0]
    assert first.question.startswith("We have a triangle") and first.prefix_steps == []
    assert first.pos[0].startswith("<code>\nimport math") and "\\boxed{8.9443}" in first.pos[0]
    fourth = pairs[3]
    assert fourth.prefix_steps[0].startswith("<code>\n# Step 1")
    assert fourth.prefix_steps[-1].endswith("<end_of_step>")
    assert fourth.pos[0].startswith("\n\n# Step 2") and fourth.neg[0].endswith("<end_of_step>")
    assert len(pairs[4].prefix_steps) == 3
    # rendered through the library's SFT template, as the PPM trainer and scorer will see it
    text = PromptTemplate.sft().render(fourth.question) + fourth.prefix + fourth.pos[0]
    assert text.startswith("<|user|>:\nLet $d$ be a positive number")
    assert "solve the problem with code.\n<code>\n# Step 1" in text


@needs_data
def test_import_reference_pairs_groups_a_node(tmp_path):
    raw = json.loads((DATA / "rm_data_examples.json").read_text(encoding="utf-8"))
    item = raw[3]
    combos = [
        {**item, "pos": p, "neg": n}
        for p in (item["pos"], item["pos"] + " ")
        for n in (item["neg"], item["neg"] + "  ", item["neg"] + "   ")
    ]
    path = tmp_path / "rm.jsonl"
    write_jsonl(path, [*combos, raw[4]])
    grouped = list(import_reference_pairs(path))
    assert len(grouped) == 2
    assert len(grouped[0].pos) == 2 and len(grouped[0].neg) == 3
    assert grouped[0].meta["records"] == 6
    assert len(list(import_reference_pairs(path, group=False))) == 7


# --------------------------------------------------------------------------- configs


def test_config_loading(tmp_path):
    cfg = load_config(PPMTrainingConfig, {"learning_rate": "1e-5", "batch_size": 4})
    assert cfg.learning_rate == 1e-5 and cfg.batch_size == 4
    with pytest.raises(ValueError, match="'learning_rte'"):
        load_config(PPMTrainingConfig, {"learning_rte": 1e-5})
    with pytest.raises(ValueError, match="lr_scheduler"):
        load_config(SFTTrainingConfig, {"lr_scheduler": "exponential"})
    with pytest.raises(ValueError, match="batch_size"):
        load_config(SFTTrainingConfig, {"batch_size": "four"})
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("learning_rate: 2e-5\npacking: true\nmax_steps: 10\n", encoding="utf-8")
    pytest.importorskip("yaml")
    cfg2 = SFTTrainingConfig.from_file(yaml_path, max_steps=20, seed=None)
    assert (cfg2.learning_rate, cfg2.packing, cfg2.max_steps, cfg2.seed) == (2e-5, True, 20, 42)
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps({"packing": True, "bogus": 1}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown SFTTrainingConfig key.*'bogus'"):
        SFTTrainingConfig.from_file(json_path)
    assert load_config(SFTTrainingConfig, cfg2.to_dict()) == cfg2


def test_training_package_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, rstar_math.training as t; t.extract_pairs; t.PPMTrainingConfig();"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
