"""The limits ftplan enforces on its input, in one place, each with its reason (README: Limits).

A value beyond a limit is refused at once with one line naming it, instead of running for minutes
or exhausting memory on what is almost always a typo.
"""

from __future__ import annotations

MAX_FILE_MIB = 4
"""Job, scenario and plan files: a 2,000-run scenario is well under 1 MiB and its plan about 1.5 MiB;
YAML parsing takes about a second per MiB before anything can be said about a file."""

MAX_RUNS = 2_000
"""Runs in one scenario (jobs times their ``count``). Candidate generation and the CP-SAT model
grow with every run; the planner is exercised up to 1,000 jobs (benchmarks/plan_scale.py)."""

MAX_POOL_NODES = 100_000
"""Nodes of one pool (owned, quota, most to buy). Larger than any cluster; the planner models only
as many identical nodes as the runs could occupy at once, so the count itself costs nothing."""

MAX_RUN_NODES = 1_024
"""Nodes one run may span (8,192 GPUs on 8-GPU nodes): the layout search enumerates every whole-node
count that the global batch allows, up to this."""

MAX_GLOBAL_BATCH = 1 << 20
"""Sequences per optimizer step: far beyond any fine-tuning recipe; the layout search enumerates
the divisors of the global batch."""

MAX_SEQ_LEN = 1 << 24
"""Tokens per sequence (16.8M): beyond every released context window."""

MAX_HISTOGRAM_BINS = 100_000
"""Lengths in a job's histogram of sequence lengths (``data.lengths``): one a token up to 100k tokens."""

MAX_TOKENS = 10**15
"""Training tokens of one job: 50× the largest published pretraining runs."""

MAX_EPOCHS = 1_000
"""Passes over the data: fine-tuning recipes use 1–10; more is almost always a typo."""

MAX_COUNT = MAX_RUNS

MAX_HOURS = 1_000_000.0
"""Deadlines, amortisation and a campaign's horizon (114 years): the planner counts whole minutes
in 64-bit integers and must keep every sum of them exact."""

MAX_USD_PER_HOUR = 1_000_000.0
"""Price or running cost of one node-hour, and a GPU-hour price on the command line."""

MAX_HOST_MEMORY_GIB = 1_048_576.0
"""RAM of one node (1 PiB): beyond any server, a typo's bound."""

MAX_USD = 1e12
"""A purchase price, budget or capital budget; money is counted in hundredths of a cent in 64-bit
integers, so sums must stay below 9.2·10^14 USD."""

MAX_TIME_LIMIT_S = 86_400.0
"""One solver run: a day."""

MAX_PARETO = 50
"""Deadlines swept for the cost–time frontier (each is a full solve)."""

# Most bus bandwidth a pool may state (GB/s): above any NVLink domain's (NVLink 5, 1.8 TB/s a GPU)
MAX_BUSBW_GBS = 10_000.0
