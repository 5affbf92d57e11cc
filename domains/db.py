"""AgentBench DB (DBBench): the model operates a SQL database over multi-turn chat.

Protocol, to the letter of AgentBench v0.2 (see ../shared/design/benchmark-protocols.md): user =
instruction, assistant = "Ok.", user = "{description}\\n{add_description}". Each reply is searched for
"Action: (.*?)\\n"; "Operation" executes the first ```sql block (newlines -> spaces) and sends back
``str(rows)`` (or the error) cut at 800 characters + "[TRUNCATED]"; anything else must carry
"\\nFinal Answer:(.*)". At most ``max_round`` operations. INSERT / UPDATE judged by the MySQL md5 of the
table after the episode (whatever the episode's end), questions by AgentBench's list comparison with a
safe literal parser instead of ``eval``. Quality = overall_cat_accuracy (mean of SELECT, INSERT, UPDATE).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from envs.sql.base import SQLBackend, SQLBackendError, SQLDatabase, SQLResult, SQLStatus, TableBuildError, TableSpec
from harness.agent_domain import AgentDomain, AgentParams
from harness.domain import SampleResult, SampleStatus, TaskResult, register_domain
from harness.episodes import Agent, Episode, ScriptedAgent, run_episodes
from harness.registry import SQL_BACKENDS

MODIFY = ("INSERT", "UPDATE", "DELETE")
OBS_LIMIT = 800
_ACTION = re.compile(r"Action: (.*?)\n")
_SQL = re.compile(r"```sql\n([\s\S]*?)\n```")
_FINAL = re.compile(r"\nFinal Answer:(.*)")
_MD5 = re.compile(r"[0-9a-f]{32}")


def category(sample: dict) -> str:
    t = sample["type"][0]
    return t if t in ("INSERT", "UPDATE") else "SELECT"  # DELETE counts with SELECT, as in AgentBench


def truncate_observation(text: str) -> str:
    return text[:OBS_LIMIT] + "[TRUNCATED]" if len(text) > OBS_LIMIT else text


def parse_answer_list(answer: str) -> list:
    """AgentBench's ``list(eval(answer))`` with a literal parser; unparseable -> the whole string."""
    try:
        return list(ast.literal_eval(answer))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return [answer]


def question_correct(answer: str, label: Sequence[Any]) -> bool:
    ans, cor = parse_answer_list(answer), list(label)
    if len(ans) == 1 and len(cor) == 1:
        try:
            return float(ans[0]) == float(cor[0])
        except (ValueError, TypeError, OverflowError):
            return ans[0] == cor[0]
    try:
        return set(ans) == set(cor)
    except TypeError:  # unhashable items
        return False


def expected_md5(sample: dict) -> str:
    m = _MD5.search(sample.get("answer_md5", ""))
    if not m:
        raise ValueError(f"sample has no md5 in answer_md5: {sample.get('answer_md5')!r}")
    return m.group(0)


def check_db_sample(row: dict) -> str | None:
    """Why a DBBench record cannot be judged (the field and what is wrong), or None: checked at load, so a
    modification without its md5 stops nothing halfway through a run."""
    for k in ("description", "add_description"):
        if not isinstance(row[k], str):
            return f"{k} must be a string"
    if not isinstance(row["type"], list) or not row["type"] or not isinstance(row["type"][0], str):
        return "type must be a non-empty list whose first item (the category) is a string"
    if not isinstance(row["label"], list):
        return "label must be a list"
    t = row["table"]
    info = t.get("table_info") if isinstance(t, dict) else None
    if not isinstance(t, dict) or not isinstance(t.get("table_name"), str) or not isinstance(info, dict):
        return "table must be an object with a string table_name and a table_info object"
    cols = info.get("columns")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in cols):
        return "table.table_info.columns must be a non-empty list of objects with a string name"
    if not isinstance(info.get("rows", []), list) or not all(isinstance(r, list) for r in info.get("rows", [])):
        return "table.table_info.rows must be a list of rows (lists)"
    if row["type"][0] in MODIFY:
        if not isinstance(row.get("answer_md5"), str) or not _MD5.search(row["answer_md5"]):
            return f"answer_md5 must hold the md5 of the table after the {row['type'][0]} (an md5 hex digest)"
        if not row["label"] or not isinstance(row["label"][0], str):
            return "label of a modification must hold the reference statement (a string)"
    return None


class DBEpisode(Episode):
    def __init__(self, sample_id: str, sample: dict, backend: SQLBackend, instruction: str, max_round: int):
        self.sample_id, self.sample = sample_id, sample
        self.max_round = max_round
        self.table = TableSpec.from_sample(sample["table"])
        self.messages = [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": f"{sample['description']}\n{sample['add_description']}"},
        ]
        self.rounds = 0
        self.done, self.turn = False, 0
        self.backend = backend
        self.db: SQLDatabase | None = None  # built at first use, so only the live episodes hold one
        try:
            self.table.validate()
        except TableBuildError as exc:
            self._finish(SampleStatus.ENV_ERROR, 0.0, {"error": str(exc)})

    def _database(self) -> SQLDatabase:
        if self.db is None:
            self.db = self.backend.create(self.table, tag=self.sample_id)
        return self.db

    def step(self, reply: str) -> None:
        self.messages.append({"role": "assistant", "content": reply})
        action = _ACTION.search(reply)
        if action and action.group(1) == "Operation":
            sql = _SQL.search(reply)
            if not sql:
                return self._judge("", SampleStatus.INVALID_ACTION)
            statement = sql.group(1).strip().replace("\n", " ")
            try:
                res = self._database().execute(statement)
            except (TableBuildError, SQLBackendError) as exc:
                return self._finish(SampleStatus.ENV_ERROR, 0.0, {"error": str(exc), "rounds": self.rounds})
            self.messages.append({"role": "user", "content": truncate_observation(res.observation())})
            self.rounds += 1
            if res.status != SQLStatus.OK:
                return self._broke_out(res)
            if self.rounds >= self.max_round:
                self._judge("", SampleStatus.TURN_LIMIT)
            return
        final = _FINAL.search(reply)
        if final:
            self._judge(final.group(1), None)
        else:
            self._judge("", SampleStatus.INVALID_ACTION)

    def close_on_context_limit(self) -> None:
        self._judge("", SampleStatus.CONTEXT_LIMIT)  # a modification already made is still judged by md5

    def _detail(self, answer: str) -> dict[str, Any]:
        return {"type": self.sample["type"][0], "category": category(self.sample), "answer": answer,
                "rounds": self.rounds}

    def _broke_out(self, res: SQLResult) -> None:
        """A statement that outlived the hard time limit, or killed or exhausted its worker, ends the
        sample as the model's failure (ENV_ERROR apart): its database is gone or no longer trusted."""
        status = {SQLStatus.TIMEOUT: SampleStatus.TIMEOUT, SQLStatus.ENV_ERROR: SampleStatus.ENV_ERROR}.get(
            res.status, SampleStatus.RESOURCE_LIMIT)
        self._finish(status, 0.0, {**self._detail(""), "sql_status": res.status.value, "error": res.error})

    def _judge(self, answer: str, failure: SampleStatus | None) -> None:
        detail = self._detail(answer)
        if self.sample["type"][0] in MODIFY:
            want = expected_md5(self.sample)
            try:
                got = self._database().table_md5(self.table)
            except (TableBuildError, SQLBackendError) as exc:  # the backend's failure, not the model's
                return self._finish(SampleStatus.ENV_ERROR, 0.0, {**detail, "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the model may have dropped or broken the table
                got = f"error: {exc}"
            detail.update(md5=got, expected_md5=want)
            ok = got == want
        else:
            detail["label"] = self.sample["label"]
            ok = failure is None and question_correct(answer, self.sample["label"])
        status = SampleStatus.SOLVED if ok else (failure or SampleStatus.WRONG)
        self._finish(status, 1.0 if ok else 0.0, detail)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def overall_cat_accuracy(results: Sequence[SampleResult]) -> tuple[float, dict[str, float]]:
    by: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for r in results:
        by.setdefault(r.detail.get("category", "SELECT"), []).append(r.score)
        by_type.setdefault(r.detail.get("type", "?"), []).append(r.score)
    cats = {k: sum(v) / len(v) for k, v in by.items()}
    per_type = {k: sum(v) / len(v) for k, v in by_type.items()}
    overall = sum(cats.values()) / len(cats) if cats else 0.0
    return overall, {**{f"cat:{k}": v for k, v in cats.items()}, **{f"type:{k}": v for k, v in per_type.items()}}


def gold_policy(sample: dict, turn: int, messages) -> str:
    """Replay: execute label[0] for modifications, answer the label for questions."""
    if sample["type"][0] in MODIFY:
        if turn == 0:
            return f"The reference statement.\nAction: Operation\n```sql\n{sample['label'][0]}\n```"
        return 'Done.\nAction: Answer\nFinal Answer: ["none"]'
    return "I know it.\nAction: Answer\nFinal Answer: " + json.dumps(sample["label"], ensure_ascii=False)


WRONG_POLICIES = {
    "zero": lambda s, t, m: 'Action: Answer\nFinal Answer: ["0"]',
    "garbage": lambda s, t, m: "SELECT banana FROM nowhere; ```sql``` Final answer maybe?",
    "never_act": lambda s, t, m: "Let me think about it.\nAction: Operation\n```sql\nSELECT 1\n```",
}


@dataclass
class DBParams(AgentParams):
    data: str = "agentbench_db/dbbench.jsonl"
    instruction: str = "prompts/dbbench_instruction.txt"
    backend: str = "sqlite"  # a registered SQL backend (harness.registry.SQL_BACKENDS): sqlite | mariadb | ...
    max_round: int = 5
    batch_size: int = 64


@register_domain("db")
class DBDomain(AgentDomain):
    """DBBench over a SQL backend (sqlite by default, or mariadb)."""

    Params = DBParams
    required = ("description", "add_description", "type", "table", "label")
    split_key = "db"

    def __init__(self, *, task, ctx, params: DBParams | None = None, **kwargs: Any):
        super().__init__(task=task, ctx=ctx, params=params, **kwargs)
        self.backend: SQLBackend | None = None
        self.instruction: str | None = None

    @property
    def instruction_path(self) -> Path:
        return self.path(self.params.instruction)

    def check_sample(self, row) -> str | None:
        return check_db_sample(row)

    def setup(self) -> None:
        super().setup()
        self.instruction = self.instruction_path.read_text()
        self.backend = self.make_backend(SQL_BACKENDS)

    def run(self, agent: Agent, indices: Sequence[int] | None = None, progress: bool = False) -> TaskResult:
        if self.backend is None:
            self.setup()
        samples = self.samples()
        eps = [DBEpisode(f"db/{i}", samples[i], self.backend, self.instruction, self.params.max_round)
               for i in self.indices(indices)]
        run_episodes([e for e in eps if not e.done], agent, batch_size=self.params.batch_size, progress=progress,
                     desc=f"{self.task}")
        results = [e.result for e in eps]
        return TaskResult(self.aggregate(results), results)

    def aggregate(self, samples: Sequence[SampleResult]) -> float:
        """AgentBench's overall category accuracy (the mean of per-category means)."""
        return overall_cat_accuracy(samples)[0]

    def pending_result(self, index: int, score: float) -> SampleResult:
        return SampleResult(f"db/{index}", SampleStatus.SOLVED if score else SampleStatus.WRONG, float(score),
                            {"category": category(self.samples()[index])})

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def scripted_agent(self, kind: str) -> Agent:
        return scripted_agent(kind)

    def reference_query_rate(self) -> tuple[int, int]:
        """How many questions' ``sql.query`` reproduce their label (information only: see
        benchmark-protocols.md; the queries come from the source datasets, often in another dialect)."""
        if self.backend is None:
            self.setup()
        hit = total = 0
        for s in self.samples():
            if s["type"][0] in MODIFY or not s.get("sql", {}).get("query"):
                continue
            total += 1
            try:
                db = self.backend.create(TableSpec.from_sample(s["table"]), tag="refq")
                try:
                    res = db.execute(s["sql"]["query"])
                finally:
                    db.close()
            except (TableBuildError, SQLBackendError):
                continue
            if res.rows is not None:
                flat = [v for row in res.rows for v in row]
                hit += question_correct(json.dumps([str(v) for v in flat], ensure_ascii=False), s["label"])
        return hit, total


def scripted_agent(kind: str) -> Agent:
    if kind == "gold":
        return ScriptedAgent(gold_policy)
    if kind == "wrong":
        kind = "zero"
    if kind in WRONG_POLICIES:
        return ScriptedAgent(WRONG_POLICIES[kind])
    raise ValueError(f"db: unknown scripted agent {kind!r} (gold | wrong | {' | '.join(WRONG_POLICIES)})")
