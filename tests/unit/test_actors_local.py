"""PolicyActor / PRMActor / SearchWorker logic in-process on a tiny model built here (no Ray).

The policy fixture is a 2-layer char-level Llama over-fitted on one worked solution, so its greedy
output is known exactly: "1+2=3", "The answer is 3", then EOS.
"""

from __future__ import annotations

import pytest
import torch

from conf.schema import BackboneConfig, PolicyConfig, PRMConfig
from pipeline.search.protocol import Critique, Proposal, Propose, Score

CHARS = list('0123456789+-*/()=:QTheanswrio. \n?"dulv,')
SOLUTION = "Q:1+2\n1+2=3\nThe answer is 3\n"


def build_tiny(path, train_text: str | None = None) -> str:
    """A char-level Llama (tokenizer built here); optionally over-fitted on `train_text` + EOS."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    if train_text:
        ids = torch.tensor([tok.encode(train_text) + [2]])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(80):
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("policy"), SOLUTION)


@pytest.fixture(scope="module")
def backbone():
    return BackboneConfig(max_prompt_tokens=32, max_step_tokens=24, max_solution_tokens=64, dtype="auto")


@pytest.fixture(scope="module")
def policy(trained_dir, backbone):
    from actors.policy import PolicyActor

    return PolicyActor(trained_dir, backbone, PolicyConfig(max_batch_size=4))


def test_greedy_proposal_is_the_memorised_step_with_exact_token_count(policy):
    [out] = policy.propose([Propose("1+2", (), n=2, temperature=0.0, seed=0)])
    assert out.steps == ("1+2=3", "1+2=3")
    assert out.tokens == 2 * len("1+2=3\n")  # 5 chars + the delimiter token, per sample
    [nxt] = policy.propose([Propose("1+2", ("1+2=3",), n=1, temperature=0.0, seed=0)])
    assert nxt == Proposal(steps=("The answer is 3",), tokens=len("The answer is 3\n"))


def test_sampled_proposals_shapes_chunking_and_same_batch_determinism(policy, backbone):
    reqs = [Propose("1+2", (), 3, 1.5, seed=s) for s in range(3)] + [Propose("4*5", ("x",), 2, 1.5, 7)]
    first = policy.propose(reqs)  # 11 rows > max_batch_size 4: three chunks
    assert [len(p.steps) for p in first] == [3, 3, 3, 2]
    for p, r in zip(first, reqs, strict=True):
        assert all("\n" not in s and s == s.strip() for s in p.steps)
        assert r.n <= p.tokens <= r.n * backbone.max_step_tokens
    assert policy.propose(reqs) == first  # same requests, same batching: same samples


def test_a_requests_samples_share_one_prefill(policy):
    """n samples of one prefix: the prompt is encoded once (first forward: 2 distinct prefixes), then every
    row decodes from its own copy of that cache."""
    shapes = []
    hook = policy.engine.model.register_forward_pre_hook(
        lambda mod, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        out = policy.propose(
            [
                Propose("1+2", (), n=3, temperature=1.0, seed=1),
                Propose("2+2", (), n=1, temperature=1.0, seed=1),
            ]
        )
    finally:
        hook.remove()
    assert shapes[0][0] == 2 and shapes[0][1] > 1  # prefill: one row per distinct prefix (chunk of 4 rows)
    assert shapes[1][1] == 1 and shapes[1][0] >= 3  # then one token per sample row (one may have stopped)
    assert [len(o.steps) for o in out] == [3, 1]


def test_greedy_solve_stops_after_the_answer_line(policy):
    [sol] = policy.greedy_solve(["1+2"], max_steps=8)
    assert sol.steps == ("1+2=3", "The answer is 3")
    assert sol.tokens == len("1+2=3\nThe answer is 3\n")  # stopped at the answer line, EOS never generated
    [capped] = policy.greedy_solve(["1+2"], max_steps=1)
    assert capped.steps == ("1+2=3",) and capped.tokens == len("1+2=3\n")


def test_sample_solutions_and_critique_shapes(policy):
    sols = policy.sample_solutions(["1+2", "3+4"], n=3, temperature=1.0, seed=1)
    assert [len(s) for s in sols] == [3, 3]
    assert all(0 < s.tokens <= 64 for group in sols for s in group)
    verdicts = policy.critique(
        [Critique("1+2", ("1+2=3",), want_reflection=w, seed=3) for w in (False, True)]
    )
    assert len(verdicts) == 2 and all(v.solved in (True, False, None) and v.tokens > 0 for v in verdicts)


def test_release_then_reload(policy, trained_dir):
    policy.release()
    with pytest.raises(RuntimeError, match="released"):
        policy.propose([Propose("1+2", (), 1, 0.0, 0)])
    policy.reload(trained_dir)
    assert policy.propose([Propose("1+2", (), 1, 0.0, 0)])[0].steps == ("1+2=3",)


def test_prm_scores_in_unit_interval_match_score_texts(trained_dir, backbone):
    from actors.prm import PRMActor
    from models.prm import score_texts

    prm = PRMActor(trained_dir, backbone, PRMConfig(max_batch_size=2))
    reqs = [
        Score("1+2", ()),
        Score("1+2", ("1+2=3",)),
        Score("1+2", ("1+2=3", "The answer is 3")),
        Score("1+2", ()),
    ]
    values = prm.score(reqs)
    assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values) and values[0] == values[3]
    texts = [prm.fmt.prefix(r.question, r.steps) for r in reqs[:3]]
    expected = score_texts(prm.model, prm.tokenizer, texts, max_length=96, batch_size=1)  # unpadded
    assert values[:3] == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------------------------------- SearchWorker


def _questions(n):
    from pipeline.records import Question

    return tuple(Question(id=f"q{i}", content=f"{i}+2", answer=str(i + 2)) for i in range(n))


def test_worker_trees_do_not_depend_on_how_many_run_at_once(tmp_path):
    """With seeded fakes, the shard file is the same whether trees run one at a time or interleaved."""
    from actors.search_worker import LocalBackend, SearchWorker
    from conf.schema import SearchConfig
    from pipeline.shards import Shard, load_shard
    from tests.fakes import FakeProposer, FakeScorer, hashed_proposer, hashed_scorer

    cfg = SearchConfig(iteration_limit=6, branch=3, roll_forward_steps=1)
    trees = {}
    for k in (1, 4):
        backend = LocalBackend(FakeProposer(hashed_proposer()), FakeScorer(hashed_scorer()))
        worker = SearchWorker(backend, trees_in_flight=k, answer_prefix="The answer is")
        info = worker.run_shard(Shard(3, 1, _questions(5), str(tmp_path / f"k{k}.jsonl")), cfg)
        assert info["trees"] == 5 and worker.progress()["trees_done"] == 5
        trees[k] = [(t.question_id, t.seed, t.nodes, t.result.solution) for t in load_shard(info["path"])]
    assert trees[1] == trees[4]
    assert [q for q, *_ in trees[1]] == ["q0", "q1", "q2", "q3", "q4"]


def test_worker_runs_several_shards_at_once_with_the_same_trees_and_each_shard_as_it_ends(tmp_path):
    """Trees of 3 shards in flight together (more trees than one shard holds) give each shard the rows it
    gets alone; shards are handed back one by one, a short shard before the long one it ran beside."""
    from actors.search_worker import LocalBackend, SearchWorker
    from conf.schema import SearchConfig
    from pipeline.shards import Shard
    from tests.fakes import FakeProposer, FakeScorer, hashed_proposer, hashed_scorer

    cfg = SearchConfig(iteration_limit=6, branch=3, roll_forward_steps=1)
    qs = _questions(9)
    work = [
        Shard(i, 1, part, str(tmp_path / f"s{i}.jsonl")) for i, part in enumerate((qs[:6], qs[6:8], qs[8:]))
    ]

    def worker(k):
        backend = LocalBackend(FakeProposer(hashed_proposer()), FakeScorer(hashed_scorer()))
        return SearchWorker(backend, trees_in_flight=k, answer_prefix="The answer is")

    def trees(rows):  # a row without its wall-clock seconds
        return [(r["question_id"], r["seed"], r["nodes"], {**r["result"], "seconds": 0}) for r in rows]

    alone, batches_alone = {}, 0
    for s in work:
        w = worker(1)
        alone[s.shard_id] = trees(w.search_shard(s, cfg)["rows"])
        batches_alone += w.progress()["batches_propose"]
    together = worker(9)
    seen = []
    for result in together.search_shards(work, cfg):
        seen.append(result["shard_id"])
        assert together.progress()["shards_done"] == len(seen)  # handed back before the others end
        assert trees(result["rows"]) == alone[result["shard_id"]]
    assert sorted(seen) == [0, 1, 2] and seen[-1] == 0  # the 6-question shard ends last
    progress = together.progress()
    assert progress["trees_done"] == 9 and progress["batches_propose"] < batches_alone


def test_worker_on_the_tiny_policy_and_prm_counts_every_token(trained_dir, backbone, tmp_path):
    from actors.policy import PolicyActor
    from actors.prm import PRMActor
    from actors.search_worker import LocalBackend, SearchWorker
    from conf.schema import SearchConfig
    from pipeline.shards import Shard, load_shard

    policy = PolicyActor(trained_dir, backbone, PolicyConfig(max_batch_size=16))
    prm = PRMActor(trained_dir, backbone, PRMConfig())
    worker = SearchWorker(LocalBackend(policy, prm), trees_in_flight=3, answer_prefix="The answer is")
    cfg = SearchConfig(iteration_limit=3, branch=2, roll_forward_steps=1)
    path = worker.run_shard(Shard(0, 0, _questions(4), str(tmp_path / "s.jsonl")), cfg)["path"]
    trees = load_shard(path)
    progress = worker.progress()
    assert len(trees) == 4 and progress["trees_done"] == 4
    assert progress["tokens"] == sum(t.result.generated_tokens for t in trees) > 0
    assert progress["scored"] == sum(t.result.scored for t in trees)
    assert progress["batches_propose"] < progress["expansions"]  # requests of several trees shared calls
    assert trees[1].nodes[0].question_id == "q1"


def test_ray_backend_sends_each_batch_to_the_least_loaded_replica():
    from actors.router import RayBackend

    class Method:
        def __init__(self, log, name):
            self.log, self.name = log, name

        def remote(self, batch):
            self.log.append(self.name)
            return object()  # stands in for an ObjectRef

    class Handle:
        def __init__(self, log, name):
            self.propose = self.critique = self.score = Method(log, name)

    log: list[str] = []
    backend = RayBackend([Handle(log, "p0"), Handle(log, "p1")], [Handle(log, "r0")], offset=1)
    assert backend.capacity("propose") == 2 and backend.capacity("score") == 1
    for kind in ("propose", "propose", "critique", "score"):
        backend.submit(kind, [])
    assert log == ["p1", "p0", "p1", "r0"]  # offset 1 starts on p1; then the idle p0; then a tie -> p1
    assert backend.load == {"policy": [1, 2], "prm": [1]}


def test_multi_token_delimiter_stops_by_text(trained_dir):
    from actors.policy import PolicyActor

    bb = BackboneConfig(step_delimiter="=3", max_prompt_tokens=32, max_step_tokens=24, max_solution_tokens=64)
    actor = PolicyActor(trained_dir, bb, PolicyConfig(max_batch_size=4))
    assert actor.engine.delim_id is None  # "=3" is two tokens: stop found in the decoded text
    [out] = actor.propose([Propose("1+2", (), n=1, temperature=0.0, seed=0)])
    assert out.steps == ("1+2",) and out.tokens == len("1+2=3")


def test_api_solve_runs_mcts_in_process(trained_dir):
    from conf.load import compose
    from loop.api import solve

    cfg = compose(["backbone.max_step_tokens=24"])
    sol = solve("1+2", cfg, policy_dir=trained_dir, prm_dir=trained_dir, iteration_limit=4, branch=2)
    assert sol.stats["iterations"] <= 4 and sol.stats["nodes"] >= 2 and sol.stats["generated_tokens"] > 0
    assert sol.text == "".join(s + "\n" for s in sol.steps)
    assert sol.steps[-1] == "The answer is 3" and sol.answer == "3"  # the memorised solution


def test_a_requests_samples_do_not_depend_on_its_batch(tmp_path_factory, backbone):
    """Per-row generators: the same (prefix, seed) gives the same samples alone or among others, so a
    resumed search repeats an uninterrupted one whatever the worker batched together."""
    from actors.policy import PolicyActor

    untrained = build_tiny(tmp_path_factory.mktemp("untrained"))  # high-entropy: samples differ a lot
    actor = PolicyActor(untrained, backbone, PolicyConfig(max_batch_size=3))
    mine = Propose("1+2", ("1+2=3",), n=3, temperature=1.0, seed=42)
    others = [Propose(f"{i}*{i}", (), n=2, temperature=1.0, seed=i) for i in range(1, 5)]
    [alone] = actor.propose([mine])
    mixed = actor.propose([*others[:2], mine, *others[2:]])
    assert mixed[2] == alone
    assert len(set(alone.steps)) > 1  # the samples of one request differ from each other
    [other_seed] = actor.propose([Propose("1+2", ("1+2=3",), n=3, temperature=1.0, seed=43)])
    assert other_seed.steps != alone.steps
