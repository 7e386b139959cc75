"""Write N GSM8K-format word problems (`{"question": ..., "answer": "... #### N"}` JSONL) made from templates,
for smoke and timing runs of real backbones without any dataset download:

    python bench/make_word_problems.py 40 /tmp/word40.jsonl
    python run.py backbone=smollm2 task=gsm8k data.path=/tmp/word40.jsonl ...

Each problem takes two arithmetic steps; the worked answer shows them like GSM8K does. With
`--mix` (`python bench/make_word_problems.py 40 /tmp/mix40.jsonl --mix`) every other problem takes one
step with numbers under 20 instead: SmolLM2-135M solves few two-step problems (0 of 6 held out), so a
self-training round on them alone finds no correct trace to learn from.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

NAMES = ["Ava", "Ben", "Carla", "Dev", "Elif", "Farid", "Grace", "Hugo", "Iris", "Jonas"]
ITEMS = ["apples", "stickers", "marbles", "pencils", "cookies", "stamps", "books", "shells"]


def problem(rng: random.Random) -> dict[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(3, 30), rng.randint(2, 20), rng.randint(2, 6)
    kind = rng.randrange(3)
    if kind == 0:
        total = (a + b) * c
        q = f"{name} has {a} {item} and gets {b} more. Then {name} gets {c} times as many as that. How many {item} does {name} have now?"
        steps = [f"{a} + {b} = {a + b}", f"{a + b} * {c} = {total}"]
    elif kind == 1:
        a = a + b
        total = (a - b) * c
        q = f"{name} had {a} {item}, gave away {b}, and then each of {c} friends gave {name} the same number of {item} as {name} had left. How many {item} were given by the friends?"
        steps = [f"{a} - {b} = {a - b}", f"{a - b} * {c} = {total}"]
    else:
        total = a * c + b
        q = f"{name} buys {c} boxes of {item} with {a} {item} in each box, and finds {b} more {item}. How many {item} does {name} have?"
        steps = [f"{c} * {a} = {a * c}", f"{a * c} + {b} = {total}"]
    return {"question": q, "answer": "\n".join(steps) + f"\n#### {total}"}


def one_step(rng: random.Random) -> dict[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 19), rng.randint(2, 9)
    if rng.random() < 0.5:
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        step, total = f"{a} + {b} = {a + b}", a + b
    else:
        a = a + b
        q = f"{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?"
        step, total = f"{a} - {b} = {a - b}", a - b
    return {"question": q, "answer": f"{step}\n#### {total}"}


def main(argv: list[str]) -> int:
    mix = "--mix" in argv
    argv = [a for a in argv if a != "--mix"]
    if len(argv) != 2:
        print(__doc__)
        return 2
    rng = random.Random(0)
    rows = [one_step(rng) if mix and i % 2 else problem(rng) for i in range(int(argv[0]))]
    Path(argv[1]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} problems to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
