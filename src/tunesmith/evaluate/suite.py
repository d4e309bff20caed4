"""The built-in regression suite, built from templates with a fixed seed: general abilities a task
fine-tune should leave alone.

Four categories, each large enough for the gate's statistics (see tunesmith.evaluate.stats):

- arithmetic: exact sums, differences, products, quotients and word problems; the answer is never a
  number that appears in the prompt, so repeating the question cannot hit it;
- facts: multiple choice (suite_facts), scored by the model's likelihood of each choice, no generation;
- instructions: IFEval-style verifiable instructions (one word, lowercase, capitals, no commas, word
  limits, start/end with a word, include a word, quotes, yes/no), checked by rules;
- format: JSON objects and lists checked against a schema, brackets, numbered and comma lists.

An item is {"id", "category", "prompt", "kind": "generate" | "choice", "max_new_tokens", and
"checks" (rule specs; "on": "added" checks only what the answer added to the prompt) and "reference"
(an answer that passes them, written with the item), or "choices" and "answer"}. `max_new_tokens` is what the expected answer needs plus a little slack: the suite is scored
on CPUs and an answer past it has already failed its instruction.
"""

from __future__ import annotations

import json
import random
from typing import Any

from tunesmith.evaluate import suite_facts as F

SEED = 17
NUMBER_ONLY = " Answer with the number only."

# open questions any answer of the requested form satisfies: the instruction, not the knowledge, is tested
QUESTIONS = [
    ("name an animal that lives in the sea", "dolphin"), ("name a fruit", "pear"), ("name a colour", "blue"),
    ("name a musical instrument", "violin"), ("name a kind of tree", "oak"),
    ("name something you find in a kitchen", "spoon"), ("name a sport", "tennis"), ("name a vegetable", "carrot"),
    ("what do people use umbrellas for", "rain"), ("what do you wear on your feet", "shoes"),
    ("name a bird", "robin"), ("name a country in Europe", "france"), ("what is your favourite season", "spring"),
    ("name a drink", "water"), ("name a tool", "hammer"), ("name a vehicle", "bus"), ("name a flower", "rose"),
    ("what do cows eat", "grass"), ("name a day of the week", "monday"), ("name a planet", "mars"),
]
YES_NO = [
    ("Is water wet?", "yes"), ("Is the Moon made of cheese?", "no"), ("Do fish live in water?", "yes"),
    ("Can a dog fly without help?", "no"), ("Is ice cold?", "yes"), ("Is fire cold?", "no"),
    ("Do birds have feathers?", "yes"), ("Is a week longer than a day?", "yes"), ("Is one more than ten?", "no"),
    ("Do cars need fuel or electricity to run?", "yes"), ("Is the Sun a star?", "yes"), ("Can a fish climb a tree?", "no"),
    ("Is snow hot?", "no"), ("Do plants need light to grow?", "yes"), ("Is a mouse bigger than an elephant?", "no"),
    ("Is Monday a day of the week?", "yes"),
]
WORDS = ["Sure", "Yes", "Well", "Okay", "Indeed"]
END_WORDS = ["done", "thanks", "end", "okay"]
INCLUDE = ["bright", "simple", "always", "green", "small", "friendly"]
KEYS = [("color", "red"), ("city", "Paris"), ("animal", "cat"), ("fruit", "apple"), ("name", "Sam"),
        ("day", "Monday"), ("drink", "tea"), ("shape", "circle"), ("month", "May"), ("metal", "iron"),
        ("planet", "Mars"), ("bird", "owl"), ("sport", "golf"), ("tool", "saw"), ("flower", "tulip"),
        ("language", "Dutch")]
NUM_KEYS = ["count", "age", "score", "total", "size", "level"]
BRACKET_WORDS = ["sun", "tree", "river", "stone", "cloud", "apple", "house", "bird", "lamp", "chair", "bread",
                 "glass", "hill", "road", "coin", "door"]
LIST_ITEMS = ["fruits", "animals", "colours", "countries", "vegetables", "sports", "cities", "birds", "tools",
              "drinks", "flowers", "jobs"]
# A prompt stands in the suite once: a repeated one is the same question twice, and pairing it twice would count
# one flipped answer as two independent items (the gate's test assumes independent items).
MAX_DRAWS = 10_000


def build_suite(seed: int = SEED) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    items = _arithmetic(rng, 80) + _facts(rng) + _instructions(rng, 120) + _format(rng, 80)
    counters: dict[str, int] = {}
    for it in items:
        counters[it["category"]] = counters.get(it["category"], 0) + 1
        it["id"] = f"{it['category']}-{counters[it['category']]:03d}"
    return items


def _gen(category: str, prompt: str, checks: list[dict[str, Any]], max_new_tokens: int,
         reference: str) -> dict[str, Any]:
    return {"category": category, "prompt": prompt, "kind": "generate", "checks": checks,
            "max_new_tokens": max_new_tokens, "reference": reference}


def _draws(category: str):
    """Attempts at drawing a new item, with the prompts taken so far; a pool too small for n fails loudly."""
    seen: set[str] = set()
    for _ in range(MAX_DRAWS):
        yield seen
    raise RuntimeError(f"suite category {category}: too few distinct prompts for the items asked")


def _arithmetic(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for seen in _draws("arithmetic"):
        if len(out) == n:
            break
        form = len(out) % 8
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        c, d = rng.randint(11, 49), rng.randint(2, 29)
        prompt, answer = [
            (f"What is {c} + {d}?", c + d),
            (f"What is {c + d} minus {d}?", c),
            (f"What is {a} times {b}?", a * b),
            (f"What is {a * b} divided by {a}?", b),
            (f"Tom has {c} apples and buys {d} more. How many apples does he have now?", c + d),
            (f"A box holds {a} rows of {b} eggs. How many eggs are in the box?", a * b),
            (f"A class has {c + d} pupils and {d} of them are away. How many pupils are in class?", c),
            (f"What is {a} + {b} + {d}?", a + b + d),
        ][form]
        if str(answer) in prompt or prompt in seen:  # "9 times 1": an echo must never contain the answer
            continue
        seen.add(prompt)
        # first number the answer adds to the question: "12 x 4 = 48" counts as 48, "48 eggs" too
        check = {"name": "number", "regex": rf"^\D*(?<![\d.]){answer}(?![\d]|\.\d)", "on": "added"}
        out.append(_gen("arithmetic", prompt + NUMBER_ONLY, [check], 12, str(answer)))
    return out


def _choice(question: str, answer: str, wrong: list[str], rng: random.Random) -> dict[str, Any]:
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return {"category": "facts", "prompt": question, "kind": "choice", "choices": choices, "answer": answer,
            "max_new_tokens": 0}


def _facts(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for table, question in ((F.CAPITALS, F.CAPITAL_Q), (F.SYMBOLS, F.SYMBOL_Q), (F.YOUNG, F.YOUNG_Q),
                            (F.OPPOSITES, F.OPPOSITE_Q), (F.PLURALS, F.PLURAL_Q), (F.LANGUAGES, F.LANGUAGE_Q),
                            (F.CONTINENTS, F.CONTINENT_Q), (F.COLOURS, F.COLOUR_Q)):
        answers = sorted({a for _, a in table})  # a table may share answers (two countries of one continent)
        for subject, answer in table:
            wrong = rng.sample([a for a in answers if a != answer], 3)
            out.append(_choice(question.format(subject), answer, wrong, rng))
    for question, number in F.COUNTS:
        wrong = rng.sample([x for x in range(max(1, number - 4), number + 5) if x != number], 3)
        out.append(_choice(question, str(number), [str(w) for w in wrong], rng))
    for question, answer, wrong in F.SCIENCE:
        out.append(_choice(question, answer, wrong, rng))
    return out


def _instructions(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for seen in _draws("instructions"):
        if len(out) == n:
            break
        q, word = rng.choice(QUESTIONS)
        q_cap = q[0].upper() + q[1:] + ("?" if q.startswith("what") else ".")
        form = len(out) % 10
        if form == 0:
            item = (f"Answer in one word: {q}{'?' if q.startswith('what') else '.'}", [{"max_words": 1}], 6, word.capitalize())
        elif form == 1:
            item = (f"Answer in lowercase letters only, with no capital letters. {q_cap}",
                    [{"not_regex": "[A-Z]"}, {"regex": "[a-z]"}], 24, f"i would say {word}.")
        elif form == 2:
            item = (f"Answer in capital letters only. {q_cap}", [{"not_regex": "[a-z]"}, {"regex": "[A-Z]"}], 24,
                    word.upper())
        elif form == 3:
            item = (f"Answer without using any commas. {q_cap}", [{"not_regex": ","}], 24, f"I would say {word}.")
        elif form == 4:
            k = rng.choice([3, 5, 8])
            item = (f"Answer in at most {k} words. {q_cap}", [{"max_words": k}], 2 * k + 6,
                    f"{word.capitalize()}.")
        elif form == 5:
            w = rng.choice(WORDS)
            item = (f"Begin your answer with the word '{w}'. {q_cap}",
                    [{"regex": rf"\A\W*{w}\b", "ignore_case": True, "on": "added"}], 16, f"{w}, {word}.")
        elif form == 6:
            w = rng.choice(END_WORDS)
            item = (f"End your answer with the word '{w}'. {q_cap} Keep it short.",
                    [{"regex": rf"\b{w}\W*\Z", "ignore_case": True, "on": "added"}], 24,
                    f"{word.capitalize()}, {w}.")
        elif form == 7:
            w = rng.choice(INCLUDE)
            item = (f"Use the word '{w}' in your answer. {q_cap}",
                    [{"regex": rf"\b{w}\b", "ignore_case": True, "on": "added"}], 24,
                    f"A {w} {word}.")
        elif form == 8:
            item = (f"Wrap your whole answer in double quotes. {q_cap}", [{"regex": r'\A\s*"[^"]+"\s*\Z'}], 20,
                    f'"{word.capitalize()}"')
        else:
            question, answer = rng.choice(YES_NO)
            item = (f"Answer with only yes or no. {question}",
                    [{"regex": rf"\A\W*{answer}\W*\Z", "ignore_case": True, "on": "added"}], 4,
                    answer.capitalize() + ".")
        prompt, checks, limit, reference = item
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(_gen("instructions", prompt, _named(checks), limit, reference))
    return out


def _format(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for seen in _draws("format"):
        if len(out) == n:
            break
        form = len(out) % 6
        if form == 0:
            key, value = rng.choice(KEYS)
            item = (f'Reply with only a JSON object that has the key "{key}" set to "{value}".',
                    [{"json_schema": _object(key, {"const": value})}], 20,
                    json.dumps({key: value}))
        elif form == 1:
            key, number = rng.choice(NUM_KEYS), rng.randint(2, 99)
            item = (f'Reply with only a JSON object that has the key "{key}" set to the number {number}.',
                    [{"json_schema": _object(key, {"const": number})}], 20,
                    json.dumps({key: number}))
        elif form == 2:
            low, mid, high = sorted(rng.sample(range(1, 30), 3))
            # given largest first: no two neighbours of the sorted answer stand together in the prompt
            item = (f"Reply with only a JSON list of the numbers {high}, {low} and {mid}, sorted from smallest to largest.",
                    [{"json_schema": {"const": [low, mid, high]}}], 16, json.dumps([low, mid, high]))
        elif form == 3:
            w = rng.choice(BRACKET_WORDS)
            item = (f"Write the word '{w}' inside square brackets, like [word], and nothing else.",
                    [{"regex": rf"\A\s*\[{w}\]\s*\Z", "ignore_case": True}], 8, f"[{w}]")
        elif form == 4:
            k = rng.choice([3, 4])
            what = rng.choice(LIST_ITEMS)
            lines = "".join(rf"{i}\.\s+\S.*\n" for i in range(1, k))
            item = (f"Write a numbered list of {k} {what}, one per line, like 1. item.",
                    [{"regex": rf"(?m)^\s*{lines}\s*{k}\.\s+\S"}], 8 * k,
                    "\n".join(f"{i}. {what} {i}" for i in range(1, k + 1)))
        else:
            k, start = rng.choice([3, 4, 5]), rng.randint(1, 9)
            numbers = [str(i) for i in range(start, start + k)]
            item = (f"Write the whole numbers from {start} to {start + k - 1}, separated by commas, and nothing else.",
                    [{"regex": r"\A\s*" + r"\s*,\s*".join(numbers) + r"\.?\s*\Z"}], 16, ", ".join(numbers))
        prompt, checks, limit, reference = item
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(_gen("format", prompt, _named(checks), limit, reference))
    return out


def _named(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": f"rule{k + 1}", **c} for k, c in enumerate(checks)]


def _object(key: str, value_schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: value_schema}}
