"""Write data/chat-train-prompts.jsonl: chat prompts for distillation, disjoint from the chat bench set.

    python scripts/chat_corpus.py [--count 320] [--seed 0] [--out data/chat-train-prompts.jsonl]

Each prompt fills one of the request forms below with a subject or an activity, drawn with a fixed seed, so
the file is the same on every run. The forms and subjects are this project's own (Apache-2.0); none of the
resulting prompts is in data/chat-prompts.jsonl (checked), so distilling on these and scoring on that set
measures held-out chat agreement.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUBJECT_FORMS = [
    "Explain {} in simple terms.",
    "What is {}, and why does it matter?",
    "Write a short paragraph about {}.",
    "Summarize the history of {} in a few sentences.",
    "What are three common misconceptions about {}?",
    "Give me five interesting facts about {}.",
    "How would you explain {} to a ten-year-old?",
    "Write a short poem about {}.",
    "What are the pros and cons of {}?",
    "Compare {} with something from everyday life.",
]
ACTIVITY_FORMS = [
    "How do I get started with {}?",
    "What are three tips for {}?",
    "Give me a step-by-step plan for {}.",
    "What mistakes do beginners make when {}?",
    "Write a friendly message inviting a friend to join me {}.",
    "How much time should I set aside each week for {}?",
    "What do I need to buy before {}?",
    "Suggest a weekly schedule for {}.",
]
SUBJECTS = [
    "photosynthesis", "the stock market", "climate change", "the internet", "vaccines", "black holes",
    "the Roman Empire", "electric cars", "recycling", "the human heart", "volcanoes", "inflation",
    "machine learning", "the moon landing", "coffee", "honeybees", "the printing press", "solar panels",
    "the Olympic Games", "earthquakes", "democracy", "jazz music", "the immune system", "tides",
    "credit scores", "the French Revolution", "renewable energy", "dinosaurs", "social media", "chocolate",
    "the periodic table", "public libraries", "minimalism", "remote work", "the Great Wall of China",
    "gravity", "meditation", "the water cycle", "bread baking", "time zones",
]
ACTIVITIES = [
    "learning to swim", "running a half marathon", "growing tomatoes", "learning Spanish", "painting with "
    "watercolours", "saving for a holiday", "writing a novel", "learning to code", "cycling to work",
    "cooking for a large family", "hiking in the mountains", "playing the piano", "keeping a journal",
    "training a puppy", "decluttering my flat", "baking sourdough", "learning chess", "volunteering locally",
    "starting a podcast", "practising yoga", "camping with kids", "knitting a scarf", "birdwatching",
    "building a bookshelf", "studying for an exam", "making new friends in a new city",
]


def prompts(count: int, seed: int) -> list[str]:
    pool = [*(f.format(s) for f, s in itertools.product(SUBJECT_FORMS, SUBJECTS)),
            *(f.format(a) for f, a in itertools.product(ACTIVITY_FORMS, ACTIVITIES))]
    random.Random(seed).shuffle(pool)
    return pool[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "data" / "chat-train-prompts.jsonl")
    args = parser.parse_args()
    bench = {json.loads(line).get("prompt") for line in (REPO / "data" / "chat-prompts.jsonl").read_text().splitlines()}
    chosen = prompts(args.count, args.seed)
    if overlap := bench.intersection(chosen):
        raise SystemExit(f"these prompts are in the bench set: {sorted(overlap)}")
    args.out.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in chosen))
    print(f"{len(chosen)} prompts -> {args.out}")


if __name__ == "__main__":
    main()
