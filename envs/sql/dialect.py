"""MySQL statements rewritten for SQLite, so the references (and models) written for MySQL mean the same.

Only what changes a statement's meaning is rewritten, with a small tokenizer that never touches text
inside literals:
- string literals: MySQL processes backslash escapes (``'a\\nb'`` holds a newline) and treats
  ``"..."`` as a string (sql_mode without ANSI_QUOTES); SQLite does neither. Both are re-emitted as
  SQLite single-quoted strings holding the characters MySQL would store.
- bare identifiers that start with a digit (``1952_British_Grand_Prix_0``), legal in MySQL and a syntax
  error in SQLite, are backtick-quoted.
Comparisons follow MySQL's default collation through the column collation the SQLite backend declares.
"""

from __future__ import annotations

import re

_ESCAPES = {"0": "\0", "'": "'", '"': '"', "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "\\": "\\"}
_DIGIT_IDENT = re.compile(r"\d+[A-Za-z_$][\w$]*")
_NUMBER = re.compile(r"(\d+(\.\d*)?([eE]\d*)?|0[xX][0-9a-fA-F]+|0[bB][01]+)")


def _read_string(sql: str, i: int) -> tuple[str, int]:
    """Parse a MySQL string literal starting at sql[i] (a quote); return (value, index after it)."""
    q = sql[i]
    out = []
    i += 1
    while i < len(sql):
        c = sql[i]
        if c == "\\" and i + 1 < len(sql):
            nxt = sql[i + 1]
            # \% and \_ keep their backslash (they matter to LIKE), as in MySQL
            out.append(_ESCAPES.get(nxt, "\\" + nxt if nxt in "%_" else nxt))
            i += 2
            continue
        if c == q:
            if i + 1 < len(sql) and sql[i + 1] == q:  # doubled quote
                out.append(q)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ValueError("unterminated string literal")


def mysql_to_sqlite(sql: str) -> str:
    out = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            try:
                value, i = _read_string(sql, i)
            except ValueError:
                out.append(sql[i:])  # leave it to SQLite to report the syntax error
                break
            out.append("'" + value.replace("'", "''") + "'")
        elif c == "`":
            j = sql.find("`", i + 1)
            while j != -1 and j + 1 < n and sql[j + 1] == "`":
                j = sql.find("`", j + 2)
            if j == -1:
                out.append(sql[i:])
                break
            out.append(sql[i : j + 1])
            i = j + 1
        elif c == "-" and sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j == -1 else j
        elif c.isalnum() or c in "_$":
            j = i
            while j < n and (sql[j].isalnum() or sql[j] in "_$."):
                j += 1
            word = sql[i:j]
            if _NUMBER.fullmatch(word):
                out.append(word)  # a number (an exponent's sign, if any, follows as plain text)
            else:
                out.append(".".join(f"`{p}`" if _DIGIT_IDENT.fullmatch(p) else p for p in word.split(".")))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)
