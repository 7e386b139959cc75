"""The one typed configuration schema of restmcts.

Every knob lives here as a dataclass field with its default; YAML files under `conf/` only override
(`defaults.yaml`, then the chosen `backbone/<name>.yaml` and `task/<name>.yaml`), and `key=value` on the
command line overrides last. Components receive their own sub-config (`SearchConfig`, `TrainConfig`, ...),
never the root.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------- search


@dataclass
class SearchConfig:
    """MCTS* arguments, same names, meanings and defaults as the authors' `MCTS_Task` constructor.

    Presets of the original are the YAML values of `search` (self-training data collection) and
    `eval.search` (evaluation); see docs/ALGORITHM.md.
    """

    branch: int = 3  # children asked for per expansion
    iteration_limit: int = 100  # search rounds (selection -> expansion -> simulation -> backup)
    time_limit: float | None = None  # seconds (milliseconds in the original); None = no limit
    exploration_constant: float = 0.7  # c in UCT = V + c * sqrt(2 ln N(parent) / N(child))
    end_gate: float = 0.9  # V >= end_gate accepts a node as a solution
    inf: float = 1.0  # bonus added to V for an unvisited child during selection
    alpha: float = 0.5  # V(child) <- (1 - alpha) V(child) + alpha * best roll-out value
    low: float = 0.0  # floor of PRM values (and start of the roll-out "best")
    high: float = 1.0  # ceiling of PRM values
    roll_policy: str = "greedy"  # greedy | random | none (no simulation)
    roll_forward_steps: int = 3  # roll-out length in steps
    roll_branch: int = 1  # proposals per roll-out step
    temperature: float = 0.7  # policy sampling temperature for proposals
    use_reflection: str = "simple"  # none | simple | common
    sample_value: str = "simple"  # simple (evaluation: stop early) | full (data collection: keep going)
    weighted_verify: bool = False  # answer = largest summed V over end leaves with that answer
    max_depth: int = 12  # a node this deep is an end leaf (guards runaway policies)
    proposal_retries: int = 2  # extra tries when an expansion got no legal proposal (all empty or illegal)
    critic: str = "rule"  # rule: answer-line detection only | policy: also ask the policy's critic prompt
    # The task's rules (pipeline/tasks/rules.py; countdown has them, file/gsm8k/arith none): illegal steps
    # are recorded but never selected, expanded or rolled out from; siblings reaching one state merge; on a
    # task whose verifier needs no gold (countdown) the value gate is off and ends are never re-selected.
    rules: bool = True
    verified_stop: bool = True  # with rules that verify: stop at the first verified solution and return it
    # with rules: a node whose children are all illegal or closed is expanded again (new samples, new
    # children beside the old) up to this many times in all, before it is closed itself (1: never again)
    max_expansions: int = 4
    value: str = "prm"  # prm | constant (no value model: every state worth (low + high) / 2; an ablation)
    # Progressive widening (with rules): selection stops at an expanded node and asks the policy for more
    # children once its visits reach `widen` * expansions^2 (while expansions < max_expansions); 0 = off:
    # a node gets new children only when all its children are closed.
    widen: float = 0.0
    # Keep every roll-out in the tree as a chain of nodes (values as scored on the way; a dead end closed),
    # not only a verified one: its tokens buy states that later selections may expand. False: the original.
    keep_rollouts: bool = False


# ------------------------------------------------------------------------------------------- backbone


@dataclass
class Resources:
    """Per-replica Ray resources; fractions allowed so several replicas share one GPU."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # Custom Ray resources per replica, e.g. {gpu_pool: 1}: the replica goes only to nodes started with
    # that resource (`ray start --resources='{"gpu_pool": 8}'`): placement on a cluster (docs/CLUSTER.md).
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainConfig:
    """One training job (policy SFT or PRM regression) on Ray Train with DeepSpeed inside."""

    lr: float = 1e-3
    epochs: float = 2.0
    max_steps: int = 0  # > 0 caps optimizer steps (smoke tests)
    micro_batch_size: int = 16  # per worker
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 256  # tokens per example (prompt + solution)
    zero_stage: int = 0  # 0-3
    offload: bool = False  # ZeRO-Offload optimizer (and params at stage 3) to CPU
    num_workers: int = 2  # Ray Train workers
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # auto: bf16 autocast where the hardware computes in bf16 (a GPU with it; in-process jobs also a CPU
    # with avx512_bf16 or AMX, models/device.py), else fp32 | true | false
    bf16: str = "auto"
    lora: LoraConfig = field(default_factory=LoraConfig)
    from_base: bool = True  # paper: fine-tune from the base model each iteration on accumulated data
    seed: int = 0
    max_grad_norm: float = 1.0  # gradient clipping (DeepSpeed gradient_clipping); 0 = off
    eval_fraction: float = 0.1  # PRM: share of questions held out for MSE / pairwise ranking accuracy
    torch_threads: int = 0  # > 0: torch.set_num_threads in the training process (1 is best on a busy CPU)
    freeze_backbone: bool = False  # PRM jobs only: train the value head, keep the LM (and its likelihoods)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    group_by_length: bool = False  # batches of rows of similar length (less padding), shuffled per epoch
    # in-process jobs only: torch.compile the model (dynamic shapes; ~1 min of compiling first, then
    # faster steps for a tiny model on a CPU, where eager overhead dominates)
    compile: bool = False
    prm_loss: str = "mse"  # PRM jobs only: mse | bce (cross-entropy against the soft target in [0, 1])


@dataclass
class BackboneConfig:
    """A policy model and a PRM base model, configured separately as in the paper."""

    name: str = "tiny"
    policy_path: str | None = None  # local HF directory; None only for built-in backbones
    prm_path: str | None = None  # local HF directory of the PRM base (or a trained PRM)
    trust_remote_code: bool = False  # true only where the model's code is not in transformers (GLM)
    step_delimiter: str = "\n"
    prompt_format: str = "plain"  # plain: prompt_template | chat: the tokenizer's chat template
    prompt_template: str = "Q:{question}\n"
    system_prompt: str = ""
    answer_prefix: str = "The answer is"  # a step starting with this states the final answer
    # Where else an answer is looked for when no line states it with answer_prefix, in this order:
    # boxed (\boxed{}), hash (#### N), answer_line ("A: N", "Answer: N"), math_verify (LaTeX), last_number.
    # Empty: the prefix only (the tiny backbone is trained on its format); real backbones list them all.
    answer_fallbacks: list[str] = field(default_factory=list)
    # Value head put on a PRM base without one (a trained PRM keeps its own): linear = Linear on the last
    # hidden state; likelihood = an MLP that also sees the model's own token log-probabilities of the
    # solution and of the last step (models/prm.py; needs the LM head and vocabulary-sized logits);
    # logprob = that MLP on the four log-probability features alone.
    prm_head: str = "linear"
    # What the round-0 PRM reads: text = prompt + steps (a head on the PRM base); state = the task's state
    # after the steps (pipeline.tasks.rules.state_text, countdown: `24 5 2 to 41`) read by a small value
    # model of its own trained from scratch (tiny backbone, tasks with a state only). A trained PRM
    # directory records what it reads (prm_config.json), so later rounds read the same.
    prm_reads: str = "text"
    # tiny backbone, prm_reads=state: the value model's shape and D_V0's solver-labelled walks per question
    value_hidden: int = 128
    value_layers: int = 4
    value_heads: int = 4
    value_intermediate: int = 512
    value_walks: int = 4
    max_prompt_tokens: int = 256
    max_step_tokens: int = 32
    max_solution_tokens: int = 256
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    policy_resources: Resources = field(default_factory=Resources)
    prm_resources: Resources = field(default_factory=Resources)
    sft: TrainConfig = field(default_factory=TrainConfig)
    prm_train: TrainConfig = field(default_factory=TrainConfig)
    # Round 0 of built-in backbones (tiny): warm-start SFT and the D_V0 PRM, trained once per machine
    # in-process (num_workers=0, no Ray Train fixed cost) on one torch thread: on a shared 2-core box
    # that measured 1.4 s/step against 5.8 s/step with 2 threads (oversubscribed machine).
    warm_start: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            lr=2e-3, epochs=8.0, micro_batch_size=64, max_length=192, num_workers=0, torch_threads=1
        )
    )
    initial_prm: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            lr=1e-3, epochs=2.0, micro_batch_size=64, max_length=192, num_workers=0, torch_threads=1
        )
    )
    # tiny backbone only: architecture of the locally built Llama
    tiny_hidden: int = 128
    tiny_layers: int = 4
    tiny_heads: int = 4
    tiny_intermediate: int = 512


# ----------------------------------------------------------------------------------------- task/data


@dataclass
class TaskConfig:
    """Where questions come from: a built-in generator (`arith`, `countdown`) or a file (`file`, `gsm8k`)."""

    name: str = "arith"
    train_size: int = 400  # arith: training questions per round pool
    heldout_size: int = 200  # arith: held-out questions (spread over heldout_difficulties)
    train_difficulties: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    heldout_difficulties: list[int] = field(default_factory=lambda: [2, 3, 4, 5])
    warm_difficulties: list[int] = field(default_factory=lambda: [2, 3])  # warm start mix
    warm_size: int = 6000
    warm_long_fraction: float = 0.0  # share of warm-start problems beyond warm_difficulties
    max_operand: int = 20  # arith: operands drawn from 1..max_operand
    max_number: int = 20  # countdown: the given numbers are drawn from 1..max_number
    min_target: int = 10  # countdown: targets drawn from min_target..max_target
    max_target: int = 100
    dv0_size: int = 2000  # questions with gold solutions behind the initial PRM's data (D_V0)
    dv0_difficulties: list[int] = field(default_factory=list)  # empty: train_difficulties
    dv0_corruptions: int = 2  # wrong branches per D_V0 question
    # countdown: the warm-started policy's own sampled solutions per D_V0 question, every prefix valued by
    # the exact solver (pipeline/tasks/countdown_dv0.py label_sample): D_V0 in the policy's own mistakes
    dv0_samples: int = 0


@dataclass
class DataConfig:
    path: str | None = None  # JSON list or JSONL of {"content": ..., "answer": ...}
    heldout_fraction: float = 0.2  # deterministic split by question id
    limit: int = 0  # > 0 keeps only the first N questions (after validation)


# -------------------------------------------------------------------------------------- runtime parts


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server the `endpoint` policy engine sends completions requests to."""

    base_url: str = "http://127.0.0.1:8000/v1"  # up to and including /v1
    model: str = ""  # the server's model name ("" = the first of GET /v1/models)
    api_key_env: str = ""  # NAME of the environment variable holding the key ("" = no key); never the key
    max_concurrency: int = 8  # requests in flight per engine
    timeout_s: float = 60.0  # per HTTP request
    max_retries: int = 2  # extra tries on 429, 5xx, timeouts and connection errors (not on other 4xx)
    backoff_s: float = 0.5  # wait before retry k (k = 1, 2, ...) is backoff_s * 2 ** (k - 1)
    use_chat: bool = False  # chat completions API (server applies its chat template) instead of completions


@dataclass
class PolicyConfig:
    engine: str = "hf"  # hf | vllm | endpoint
    replicas: int = 1
    max_batch_size: int = 256  # sequences per generate call
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)  # engine=endpoint only


@dataclass
class PRMConfig:
    replicas: int = 1
    max_batch_size: int = 256


@dataclass
class PoolConfig:
    search_workers: int = 2
    shard_size: int = 32  # questions per shard file (a worker runs trees of several shards at once)
    # concurrent trees per search worker, or auto: enough that a worker's policy batches reach the knee of
    # the policy's raw throughput curve, measured once per pool (actors/pool.py: knee_rows)
    trees_in_flight: int | str = "auto"
    worker_num_cpus: float = 0.25
    worker_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per search worker
    max_restarts: int = 2
    # Seconds to wait for Ray to place the pool (an autoscaling cluster may add nodes) before failing with
    # a message naming the resource keys to change; a pool that can never fit fails at once.
    placement_timeout_s: float = 120.0


@dataclass
class SelectionConfig:
    """Value inference and trace selection (docs/ALGORITHM.md section 3)."""

    sft_top_k: int = 2  # distinct correct traces kept per question, best value first
    sft_filter: str = "correct"  # correct | authors (PRM score >= 0.2, summary >= 50 chars) | oracle
    # round-0 SFT examples (the warm start's worked solutions; tasks with a warm-start set) mixed into
    # every round's policy SFT, a fixed sample: 0 = the paper's recipe (self-generated traces only)
    sft_replay: int = 0
    # where each round's policy training starts: round0 = the round-0 policy on the traces of rounds 1..k
    # (the paper's recipe) | previous = round k-1's policy on round k's traces only
    sft_from: str = "round0"
    authors_min_value: float = 0.2
    authors_min_chars: int = 50


@dataclass
class TotConfig:
    """Tree-of-Thought baselines (eval methods tot_bfs, tot_dfs), guided by the same PRM as MCTS*."""

    beam: int = 3  # BFS: partial solutions kept per depth (finished ones included)
    branch: int = 3  # proposals per expansion
    max_depth: int = 12  # a node this deep is finished
    threshold: float = 0.3  # DFS: children the PRM scores below this are pruned
    gate: float = 0.9  # DFS: the first finished solution scored >= gate stops the search
    budget: int = 50  # DFS: expansions at most
    temperature: float = 0.7  # policy sampling temperature for proposals
    proposal_retries: int = 2  # extra tries when an expansion got no legal proposal (all empty or illegal)
    rules: bool = True  # as in SearchConfig: the task's rules, and its verifier where it needs no gold
    verified_stop: bool = True
    value: str = "prm"  # prm | constant


@dataclass
class BaselineConfig:
    """ReST-EM and Self-Rewarding baselines (docs/ALGORITHM.md section 5; pipeline/baselines.py)."""

    rest_em_samples: int = 8  # CoT samples per question per round (when match_budget is off)
    rest_em_top_k: int = 2  # distinct correct samples kept per question for SFT
    match_budget: bool = True  # sample until ReST-MCTS*'s counted search-phase tokens of the round are spent
    # A rest_mcts run directory whose state.json gives round k's counted search tokens (the budget);
    # None: no reference, rest_em_samples per question. mode=compare sets it to its rest_mcts run.
    budget_run: str | None = None
    judge: str = "prm"  # prm: the PRM scores samples (tiny backbones cannot judge) | llm: LLM_JUDGE_PROMPT
    min_margin: float = 0.1  # best - worst judge score (on [0, 1]; LLM scores mapped by judge_unit)
    dpo_beta: float = 0.1  # DPO temperature: higher stays closer to the reference policy
    dpo: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-4, epochs=2.0))  # lr: not tuned


@dataclass
class EvalConfig:
    methods: list[str] = field(default_factory=lambda: ["cot", "mcts"])
    n: int = 8  # samples for sc / bon
    search: SearchConfig = field(default_factory=SearchConfig)
    tot: TotConfig = field(default_factory=TotConfig)
    # Equal-budget sweep: multipliers (e.g. [0.25, 0.5, 1, 2]) of each method's budget knob; every method
    # but cot (one greedy solution) also runs at each, on the same questions, and eval.json gets "sweep"
    # (accuracy, tokens/question per point; eval_budget.png). Knobs, rounded half up, at least 1:
    # sc, bon: n | mcts: search.iteration_limit | tot_bfs: tot.beam (branch and max_depth fixed: tokens
    # ~ beam * branch per depth) | tot_dfs: tot.budget (expansions). Empty: no sweep.
    budgets: list[float] = field(default_factory=list)
    # On a task whose verifier needs no gold answer (countdown): searches play by the rules and stop at the
    # first verified solution; sc/bon draw `verify_batch` samples at a time until one verifies or n are
    # drawn (tokens of every drawn sample count). false: the PRM's pick alone, no rules (the PRM measured).
    verify_at_test_time: bool = True
    verify_batch: int = 2


@dataclass
class RayConfig:
    address: str | None = None  # None: start locally (or RAY_ADDRESS); "auto": join a running cluster
    dashboard_host: str = "127.0.0.1"
    include_dashboard: bool = True
    num_cpus: int | None = None


@dataclass
class RayTrainConfig:
    """Ray Train settings shared by every training job with num_workers >= 1 (trainers/job.py)."""

    # RunConfig(storage_path=...): where Ray Train keeps its run state. None: <run dir>/ray_train under
    # run.root. A path every training node mounts, or a URI pyarrow supports (s3://, gs://, hdfs://, file://);
    # the job's files go to <storage_path>/<the job's path under run.root>. Models are written under run.root.
    storage_path: str | None = None
    worker_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per worker


@dataclass
class RunConfig:
    name: str = "default"
    root: str = "runs"


@dataclass
class Config:
    iteration: int = 2  # self-training iterations after round 0
    seed: int = 0
    mode: str = "train"  # train | evaluate | compare
    method: str = "rest_mcts"  # rest_mcts | rest_em | self_rewarding
    dry_run: bool = False  # print the resolved config and exit
    # sizes for a kind of machine (conf/preset/*.yaml), merged after the backbone and task groups:
    # none | small (a real backbone such as smollm2 on a 2-core CPU: one iteration of ~40 questions)
    preset: str = "none"
    resume: bool = True  # the same command again continues runs/<run.name>; false starts it afresh
    cache_dir: str = ".cache/restmcts"  # built tiny backbones, warm starts, converted models
    log_level: str = "INFO"
    # experiment tracker every metrics.jsonl event also goes to: none | tensorboard (event files under
    # <run dir>/tensorboard/) | wandb (offline unless WANDB_MODE is set); extras `.[tensorboard]`, `.[wandb]`
    tracker: str = "none"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # not `values`: a dict method
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    train: RayTrainConfig = field(default_factory=RayTrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


# Values a field may take where the type alone does not say; checked at load time.
CHOICES: dict[str, tuple[str, ...]] = {
    "mode": ("train", "evaluate", "compare"),
    "method": ("rest_mcts", "rest_em", "self_rewarding"),
    "selection.sft_from": ("round0", "previous"),
    "search.roll_policy": ("greedy", "random", "none"),
    "search.use_reflection": ("none", "simple", "common"),
    "search.sample_value": ("simple", "full"),
    "search.critic": ("rule", "policy"),
    "eval.search.roll_policy": ("greedy", "random", "none"),
    "eval.search.use_reflection": ("none", "simple", "common"),
    "eval.search.sample_value": ("simple", "full"),
    "eval.search.critic": ("rule", "policy"),
    "search.value": ("prm", "constant"),
    "eval.search.value": ("prm", "constant"),
    "eval.tot.value": ("prm", "constant"),
    "backbone.prompt_format": ("plain", "chat"),
    "backbone.prm_head": ("linear", "likelihood", "logprob"),
    "backbone.prm_reads": ("text", "state"),
    "backbone.sft.prm_loss": ("mse", "bce"),
    "backbone.prm_train.prm_loss": ("mse", "bce"),
    "backbone.warm_start.prm_loss": ("mse", "bce"),
    "backbone.initial_prm.prm_loss": ("mse", "bce"),
    "baselines.dpo.prm_loss": ("mse", "bce"),
    "backbone.dtype": ("auto", "float32", "bfloat16", "float16"),
    "backbone.sft.bf16": ("auto", "true", "false"),
    "backbone.prm_train.bf16": ("auto", "true", "false"),
    "backbone.warm_start.bf16": ("auto", "true", "false"),
    "backbone.initial_prm.bf16": ("auto", "true", "false"),
    "policy.engine": ("hf", "vllm", "endpoint"),
    "selection.sft_filter": ("correct", "authors", "oracle"),
    "baselines.judge": ("prm", "llm"),
    "baselines.dpo.bf16": ("auto", "true", "false"),
    "tracker": ("none", "tensorboard", "wandb"),
}
EVAL_METHODS = ("cot", "sc", "bon", "mcts", "mcts_const", "tot_bfs", "tot_dfs")
ANSWER_FALLBACKS = ("boxed", "hash", "answer_line", "math_verify", "last_number")  # pipeline.grading
