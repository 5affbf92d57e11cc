"""Seeded task families of the mini world, in the formats of ../shared/data.

Each family writes samples that the real domain reads unchanged: ``mini-code`` rows in the MBPP+ format
(``domains.coding``), ``mini-os`` rows in the AgentBench OS format (``domains.os_interaction``), ``mini-db``
rows in the DBBench format (``domains.db``). Instances are drawn from templates with copyable arguments
(names, paths, values appear in the question), so a model of a few million parameters can learn a family
from a few hundred gold trajectories; the templates are what the expert must pick from the wording.

Every family also has a ``gold_policy`` (the scripted trajectory an expert is fine-tuned on: act, read the
observation, answer from it) and a ``noise_policy`` (the same formats with a random template and random
arguments: what the base model is pretrained on, so it follows the protocol but has no skill).
``make_splits`` draws train / eval instances with disjoint keys; the domain splits eval into opt / test.
"""

from __future__ import annotations

import json
import random
import re
from typing import Callable

from envs.sql.base import TableSpec
from envs.sql.sqlite import SQLiteBackend

NAMES = ("alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima", "nova", "omega", "pixel", "quartz", "rho",
         "sigma", "tango", "ultra", "vega", "zulu", "comet", "ember", "frost", "maple", "orbit", "raven", "cedar")
WORDS = ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "robot", "candle", "forest", "ocean",
         "silver", "rocket", "garden", "bridge", "window")
CITIES = ("Paris", "Oslo", "Lima", "Rome", "Cairo", "Tokyo", "Quito", "Dakar", "Hanoi", "Perth")

# -- prompts (the protocols' formats, shortened so that a tiny model's context holds them) ----------------
CODE_SYSTEM = "You are a coding assistant. Write the Python function."
DB_INSTRUCTION = (
    "Answer the question with SQL on a MySQL table. To run SQL, reply:\n"
    "Action: Operation\n```sql\nSELECT * FROM table;\n```\n"
    "I will execute it and give you the output. To give the final answer, reply:\n"
    "Action: Answer\nFinal Answer: [\"ANSWER\"]\n"
    "If the question asks to modify the table, answer [\"none\"] when you are done.")
OS_ONESHOT = [
    {"role": "user", "content": "You act on a Linux shell. Reply with Think: then Act: bash with a ```bash block, "
                                "or Act: answer(...) with the answer, or Act: finish.\n\nMy problem is:\n\n"
                                "How many files are in /etc/skel?"},
    {"role": "assistant", "content": "Think: count the files.\n\nAct: bash\n\n```bash\nls /etc/skel | wc -l\n```"},
    {"role": "user", "content": "The output of the OS:\n\n3"},
    {"role": "assistant", "content": "Think: the output is the answer.\n\nAct: answer(3)"},
]


# -- mini-code ----------------------------------------------------------------------------------------------
def _lst(rng):
    return [rng.randint(0, 9) for _ in range(rng.randint(3, 6))]


def _word(rng):
    return rng.choice(WORDS)


# template: (instruction with {k}, body with {k}, argument maker, uses k)
CODE_TEMPLATES = {
    "add": ("add {k} to a number", "return x + {k}", lambda r: r.randint(-9, 20)),
    "sub": ("subtract {k} from a number", "return x - {k}", lambda r: r.randint(-9, 20)),
    "mul": ("multiply a number by {k}", "return x * {k}", lambda r: r.randint(-9, 20)),
    "max": ("return the largest element of a list", "return max(x)", _lst),
    "min": ("return the smallest element of a list", "return min(x)", _lst),
    "sum": ("return the sum of a list", "return sum(x)", _lst),
    "rev": ("reverse a list", "return x[::-1]", _lst),
    "sort": ("sort a list in ascending order", "return sorted(x)", _lst),
    "count": ("count how many times {k} occurs in a list", "return x.count({k})", _lst),
    "upper": ("convert a string to upper case", "return x.upper()", _word),
    "len": ("return the length of a string", "return len(x)", _word),
    "first": ("return the first element of a list", "return x[0]", _lst),
}


def _code_fn(name: str, body: str) -> str:
    return f"def {name}(x):\n    {body}\n"


def code_sample(rng: random.Random, idx: int) -> dict:
    kind = rng.choice(sorted(CODE_TEMPLATES))
    instr, body, arg = CODE_TEMPLATES[kind]
    k = rng.randint(1, 9)
    name = f"{rng.choice(NAMES)}_{rng.choice(WORDS)}"
    solution = _code_fn(name, body.format(k=k))
    env: dict = {}
    exec(solution, env)  # our own template code, not model output
    ex = arg(rng)
    inputs = [[arg(rng)] for _ in range(8)]  # the hidden tests (one sandbox run judges them all)
    assertion = f"assert {name}({ex!r}) == {env[name](ex)!r}"
    return {"task_id": f"MiniCode/{idx}", "prompt": f'"""\nWrite a function to {instr.format(k=k)}.\n{assertion}\n"""',
            "entry_point": name, "canonical_solution": solution, "base_input": inputs, "plus_input": [],
            "atol": 0, "assertion": assertion, "mini": {"kind": kind, "k": k}}


def code_gold(sample: dict, turn: int, messages) -> str:
    return "\n" + sample["canonical_solution"] + "```"


def code_noise(rng: random.Random) -> Callable:
    def policy(sample, turn, messages):
        kind = rng.choice(sorted(CODE_TEMPLATES))
        return "\n" + _code_fn(sample["entry_point"], CODE_TEMPLATES[kind][1].format(k=sample["mini"]["k"])) + "```"
    return policy


# -- mini-os ------------------------------------------------------------------------------------------------
def _printf_file(path: str, lines: list[str]) -> str:
    body = "\\n".join(lines) + "\\n"
    return f"printf '{body}' > {path}"


def os_sample(rng: random.Random, idx: int) -> dict:
    d = f"/root/{rng.choice(NAMES)}"
    f = f"{d}/{rng.choice(WORDS)}.txt"
    w = rng.choice(WORDS)
    kind = rng.choice(OS_KINDS)
    script = [f"mkdir -p {d}"]
    if kind in ("files", "ext"):
        n_txt, n_log = rng.randint(1, 9), rng.randint(1, 9)
        names = rng.sample(WORDS, n_txt)
        script.append("touch " + " ".join(f"{d}/{w}.txt" for w in names))
        script.append("touch " + " ".join(f"{d}/{w}{i}.log" for i, w in enumerate(rng.sample(WORDS, n_log))))
        if kind == "files":
            q, ans = f"How many files are in {d}?", n_txt + n_log
        else:
            q, ans = f"How many .log files are in {d}?", n_log
    else:
        lines = [" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(rng.randint(2, 9))]
        script.append(_printf_file(f, lines))
        if kind == "lines":
            q, ans = f"How many lines does {f} have?", len(lines)
        elif kind == "grep":
            q, ans = f"How many lines of {f} contain the word {w}?", sum(w in ln.split() for ln in lines)
        else:
            q, ans = f"What is the first word of {f}?", lines[0].split()[0]
    cmd = OS_COMMANDS[kind].format(d=d, f=f, w=w)
    return {"index": str(idx), "description": q, "init_script": [["bash", "\n".join(script)]],
            "match": {"answer": str(ans), "strip": True}, "example_script": ["bash", cmd],
            "mini": {"kind": kind, "d": d, "f": f, "w": w}}


OS_KINDS = ("files", "lines", "grep", "head", "ext")
OS_COMMANDS = {"files": "ls {d} | wc -l", "ext": "ls {d}/*.log | wc -l", "lines": "wc -l < {f}",
               "grep": "grep -c {w} {f}", "head": "head -n 1 {f} | cut -d ' ' -f 1"}


def _last_observation(messages) -> str:
    last = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
    return last.removeprefix("The output of the OS:\n\n").strip() if last.startswith("The output of the OS:") else ""


def os_gold(sample: dict, turn: int, messages) -> str:
    if turn == 0:
        return f"Think: run a command.\n\nAct: bash\n\n```bash\n{sample['example_script'][1]}\n```"
    return f"Think: the output is the answer.\n\nAct: answer({_last_observation(messages)})"


def os_noise(rng: random.Random) -> Callable:
    def policy(sample, turn, messages):
        if turn == 0:  # a random template on the question's own paths
            cmd = OS_COMMANDS[rng.choice(OS_KINDS)].format(**{k: sample["mini"][k] for k in ("d", "f", "w")})
            return f"Think: run a command.\n\nAct: bash\n\n```bash\n{cmd}\n```"
        return os_gold(sample, turn, messages)
    return policy


# -- mini-db ------------------------------------------------------------------------------------------------
DB_KINDS = ("lookup", "city", "count", "count", "insert", "update", "delete")
DB_SQL = {
    "lookup": "SELECT price FROM {t} WHERE name = '{who}';",
    "city": "SELECT city FROM {t} WHERE name = '{who}';",
    "count": "SELECT COUNT(*) FROM {t} WHERE city = '{c}';",
    "insert": "INSERT INTO {t} (name, price, city) VALUES ('{n}', '{p}', '{nc}');",
    "update": "UPDATE {t} SET price = '{v}' WHERE name = '{who}';",
    "delete": "DELETE FROM {t} WHERE name = '{who}';",
}
DB_TYPE = {"lookup": "other", "city": "other", "count": "counting", "insert": "INSERT", "update": "UPDATE",
           "delete": "DELETE"}


def db_sample(rng: random.Random, idx: int) -> dict:
    t = rng.choice(("shop", "stock", "staff", "trips", "items"))
    people = rng.sample(NAMES, rng.randint(4, 7))
    rows = [[p, 10 * rng.randint(1, 9), rng.choice(CITIES[:5])] for p in people]  # prices: few distinct tokens
    cols = ["name", "price", "city"]
    kind = rng.choice(DB_KINDS)
    who = rng.choice(people)
    row = next(r for r in rows if r[0] == who)
    args = {"t": t, "who": who, "c": rng.choice(CITIES[:5]), "v": 10 * rng.randint(1, 9),
            "n": rng.choice([n for n in NAMES if n not in people]), "p": 10 * rng.randint(1, 9), "nc": rng.choice(CITIES)}
    q, label = {
        "lookup": (f"What is the price of {who}?", [str(row[1])]),
        "city": (f"What is the city of {who}?", [row[2]]),
        "count": (f"How many rows have the city {args['c']}?", [str(sum(r[2] == args["c"] for r in rows))]),
        "insert": (f"Insert a row with name {args['n']}, price {args['p']} and city {args['nc']}.", None),
        "update": (f"Set the price of {who} to {args['v']}.", None),
        "delete": (f"Delete the row of {who}.", None),
    }[kind]
    sql = DB_SQL[kind].format(**args)
    s = {"description": q, "add_description": f"The name of this table is {t}, and the headers of this table "
                                               f"are {', '.join(cols)}.",
         "label": label or [sql], "type": [DB_TYPE[kind]],
         "table": {"table_name": t, "table_info": {"columns": [{"name": c, "type": "TEXT"} for c in cols],
                                                    "rows": rows}},
         "sql": {"query": sql}, "mini": {"kind": kind, "args": args}}
    if label is None:
        s["answer_md5"] = _md5_after(s, sql)
    return s


def _md5_after(sample: dict, sql: str) -> str:
    """The judge's md5 of the table after the gold statement, computed by the same SQL backend."""
    spec = TableSpec.from_sample(sample["table"])
    db = SQLiteBackend().create(spec, tag="mini")
    try:
        res = db.execute(sql)
        if res.error:
            raise RuntimeError(f"mini-db template produced bad SQL {sql!r}: {res.error}")
        return db.table_md5(spec)
    finally:
        db.close()


_ROWS = re.compile(r"^\[\((.*?),?\)\]$")


def _answer_from_rows(obs: str) -> str:
    m = _ROWS.match(obs.strip())
    val = m.group(1).strip().strip("'") if m else obs.strip()
    return json.dumps([val])


def db_gold(sample: dict, turn: int, messages) -> str:
    if turn == 0:
        return f"Run SQL.\nAction: Operation\n```sql\n{sample['sql']['query']}\n```"
    if sample["type"][0] in ("INSERT", "UPDATE", "DELETE"):
        return 'Done.\nAction: Answer\nFinal Answer: ["none"]'
    return "The output is the answer.\nAction: Answer\nFinal Answer: " + _answer_from_rows(messages[-1]["content"])


def db_noise(rng: random.Random) -> Callable:
    def policy(sample, turn, messages):
        if turn == 0:  # a random statement template on the question's own table and values
            sql = DB_SQL[rng.choice(DB_KINDS)].format(**sample["mini"]["args"])
            return f"Run SQL.\nAction: Operation\n```sql\n{sql}\n```"
        return db_gold(sample, turn, messages)
    return policy


FAMILIES = {
    "code": {"make": code_sample, "gold": code_gold, "noise": code_noise, "key": lambda s: s["prompt"]},
    "os": {"make": os_sample, "gold": os_gold, "noise": os_noise, "key": lambda s: s["description"] + s["init_script"][0][1]},
    "db": {"make": db_sample, "gold": db_gold, "noise": db_noise,
           "key": lambda s: s["description"] + json.dumps(s["table"])},
}


def make_splits(family: str, n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    """``n_train`` training and ``n_eval`` evaluation instances with disjoint keys (eval drawn first)."""
    fam = FAMILIES[family]
    rng = random.Random(f"mini:{family}:{seed}")
    seen: set[str] = set()
    out: list[list[dict]] = [[], []]
    for part, n in ((1, n_eval), (0, n_train)):
        tries = 0
        while len(out[part]) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise RuntimeError(f"mini-{family}: cannot draw {n} distinct instances")
            s = fam["make"](rng, len(out[part]))
            k = fam["key"](s)
            if k not in seen:
                seen.add(k)
                out[part].append(s)
    return out[0], out[1]
