from harness.cli import main


def test_doctor_reports_every_backend_with_a_reason(capsys):
    main(["doctor"])
    out = capsys.readouterr().out.splitlines()
    registered = out[out.index("registered:") + 1:]
    out = out[: out.index("registered:")]  # the backends' verdicts come first
    for kind in ("domains: coding, db, os, sam, vector_world", "mutations: gaussian, gaussian_official, none, svd",
                 "methods: cmaes", "leaderboards: mini, retention, sam, table"):
        assert any(line.strip().startswith(kind) for line in registered), kind
    names = ["bubblewrap", "sqlite", "mariadb", "docker engine", "vllm"]
    for n in names:
        line = next(line for line in out if n in line)
        assert line.startswith(("ok ", "NO ")) and ": " in line  # a verdict and a reason
    assert any(line.startswith("ok ") and "sqlite" in line for line in out)
