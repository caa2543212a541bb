"""A synthetic multi-session conversation set in LoCoMo's format, for ``lightmem eval locomo --data``.

Each conversation has two people who meet over several dated sessions and tell each other facts about
themselves (pets, trips, jobs, hobbies, numbers), among small talk. Both people have facts of every
kind, so a question about one person has a near miss in the other's turns. Some facts come as an
answer to the other's question ("Did you end up going to Oslo?" / "Yes, in March!"), some people
introduce themselves under another name in the first session and are asked about under it, and some
questions need facts from several sessions. Written from a seeded generator, so the file is the same on
every machine; nothing in it comes from LoCoMo.

    python -m bench.synthetic_sessions --out results/synthetic_sessions.json [--conversations 12 --seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

NAMES = ["Priya", "Mateo", "Hannah", "Kofi", "Ingrid", "Tomasz", "Leila", "Dmitri", "Ayesha", "Bruno", "Mei", "Oskar",
         "Farah", "Jonas", "Carmen", "Ravi", "Sofia", "Emeka", "Yuki", "Lars", "Nadia", "Pedro", "Greta", "Samir"]
NICKNAMES = ["Pip", "Teo", "Hanny", "Kay", "Inga", "Tom", "Lee", "Dima", "Ash", "Bru", "May", "Ossie"]
PETS = [("dog", "Biscuit"), ("cat", "Miso"), ("parrot", "Kiwi"), ("rabbit", "Clover"), ("dog", "Pepper"), ("cat", "Noodle")]
PLACES = ["Oslo", "Lisbon", "Kyoto", "Cusco", "Tbilisi", "Hanoi", "Reykjavik", "Marrakesh", "Valparaiso", "Tallinn"]
JOBS = ["nurse", "carpenter", "data analyst", "chef", "librarian", "pilot", "architect", "teacher"]
HOBBIES = ["pottery", "rock climbing", "birdwatching", "chess", "salsa dancing", "beekeeping", "kayaking", "knitting"]
SMALL_TALK = ["How was your week?", "Pretty busy, but good. Work has been a lot lately.", "Did you see the game on Sunday?",
              "The weather has been so strange this month.", "I finally cleaned out the garage, it took forever.",
              "Haha, that sounds like me.", "Anyway, how are you doing?", "Not bad at all, thanks for asking!",
              "I've been trying to sleep more, it helps.", "Same here, I need a vacation soon."]


def _facts(rng: random.Random) -> dict[str, Any]:
    pet = rng.choice(PETS)
    return {"pet": pet, "place": rng.choice(PLACES), "job": rng.choice(JOBS), "hobbies": rng.sample(HOBBIES, 2),
            "kids": rng.randint(2, 5), "month": rng.choice(["March", "April", "June", "September", "November"])}


def conversation(index: int, rng: random.Random) -> dict[str, Any]:
    """One sample: sessions of turns, and questions with their evidence turn ids."""
    a, b = rng.sample(NAMES, 2)
    alias = rng.choice(NICKNAMES) if rng.random() < 0.5 else None
    facts = {a: _facts(rng), b: _facts(rng)}
    start = datetime(2024, 1, 8, 18, 0) + timedelta(days=index * 3)
    sessions: list[list[dict[str, Any]]] = []
    questions: list[dict[str, Any]] = []

    def say(who: str, text: str) -> str:
        turn = {"speaker": who, "text": text, "dia_id": f"D{len(sessions)}:{len(sessions[-1]) + 1}"}
        sessions[-1].append(turn)
        return str(turn["dia_id"])

    def chat(n: int) -> None:
        for _ in range(n):
            say(rng.choice([a, b]), rng.choice(SMALL_TALK))

    plans = ["pet", "place", "job", "hobby", "kids"]
    for s in range(len(plans)):
        sessions.append([])
        chat(rng.randint(1, 3))
        if s == 0:
            intro = f"By the way, my name is {a}, but call me {alias}." if alias else f"Nice to catch up, {b}!"
            say(a, intro)
        for who in rng.sample([a, b], 2):
            other, f = (b if who == a else a), facts[who]
            asked = alias if (who == a and alias) else who
            plan = plans[s]
            if plan == "pet":
                kind, name = f["pet"]
                ev = say(who, f"We adopted a {kind} called {name} from the shelter, she is adorable.")
                questions.append(_q(f"What is the name of {asked}'s {kind}?", name, 4, [ev]))
            elif plan == "place":
                q = say(other, f"Did you end up going to {f['place']} like you planned?")
                ev = say(who, f"Yes, in {f['month']}! It was wonderful.")
                questions.append(_q(f"When did {asked} travel to {f['place']}?", f["month"], 2, [q, ev]))
            elif plan == "job":
                ev = say(who, f"I started working as a {f['job']} this month, still getting used to it.")
                questions.append(_q(f"What job did {asked} start?", f["job"], 4, [ev]))
            elif plan == "hobby":
                evs = [say(who, f"I've been really into {h} lately.") for h in f["hobbies"]]
                questions.append(_q(f"Which hobbies has {asked} taken up?", ", ".join(f["hobbies"]), 1, evs))
            else:
                ev = say(who, f"Our family is loud, we have {f['kids']} kids running around now.")
                questions.append(_q(f"How many kids does {asked} have?", str(f["kids"]), 4, [ev]))
            chat(rng.randint(1, 2))
    conv: dict[str, Any] = {"speaker_a": a, "speaker_b": b}
    for n, turns in enumerate(sessions, start=1):
        when = start + timedelta(weeks=3 * n)
        conv[f"session_{n}_date_time"] = when.strftime("%-I:%M %p on %-d %B, %Y")  # LoCoMo's form
        conv[f"session_{n}"] = turns
    return {"sample_id": f"syn-{index}", "conversation": conv, "qa": questions}


def _q(question: str, answer: str, category: int, evidence: list[str]) -> dict[str, Any]:
    return {"question": question, "answer": answer, "category": category, "evidence": evidence}


def build(conversations: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [conversation(i, rng) for i in range(conversations)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/synthetic_sessions.json"), help="file to write")
    parser.add_argument("--conversations", type=int, default=12, help="how many conversations")
    parser.add_argument("--seed", type=int, default=7, help="random seed (same seed, same file)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = build(args.conversations, args.seed)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(data)} conversations, {sum(len(d['qa']) for d in data)} questions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
