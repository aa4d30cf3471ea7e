"""``edge-runtime personalize recommend|feedback|info|population``: a per-user model learned from answers.

    edge-runtime personalize recommend --user alice --context class=speech,level=-32,noise=-48,hour=20
    edge-runtime personalize feedback --user alice --context class=speech,level=-32,noise=-48,hour=20 \
        --params denoise_strength=0.6,gain_db=2,eq_tilt_db=1 --reject
    edge-runtime personalize feedback --user alice --context ... --preset clear_speech --accept
    edge-runtime personalize feedback --user alice --context ... --params ... --adjust gain_db=-1
    edge-runtime personalize population            # learn the crowd's prior from every user's state

Each user's model is one state file, ``<state dir>/personalize/<user>.state`` (``--state`` names
a file instead), rewritten atomically after every feedback under an ``fcntl`` lock on
``<state>.lock``: two writers of one user take turns (no feedback lost), and a power cut during
the save leaves the previous state, so at most that one feedback is lost. The population prior
is ``<state dir>/personalize/_population.state`` (``--population`` names another; the leading
``_`` keeps it apart from user names): when present, every user's recommendations start from it.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os

from ..errors import ConfigError

CONTEXT_KEYS = {"class": "audio_class", "level": "level_dbfs", "noise": "noise_floor_dbfs", "hour": "hour"}
POPULATION_FILE = "_population.state"


def add_parser(sub) -> None:
    from ..cliutil import deprecated_alias, parser_kwargs

    p = sub.add_parser("personalize", **parser_kwargs(
        "learn a user's preferred effect settings from feedback",
        ("edge-runtime personalize recommend -u ana --context class=speech,level=-25",
         "edge-runtime personalize feedback -u ana --context class=speech --preset clear_speech --accept",
         "edge-runtime personalize info -u ana --json", "edge-runtime personalize ACTION --help")))
    p.set_defaults(func=dispatch)
    ps = p.add_subparsers(dest="personalize_command", metavar="ACTION")

    def common(q, user=True):
        if user:
            q.add_argument("--user", "-u", required=True, help="user name (letters, digits, _ . @ -)")
            q.add_argument("--state", "-s", help="state file (default: <state dir>/personalize/<user>.state)")
        q.add_argument("--state-dir", help="folder of the state files (default: $EDGE_RUNTIME_STATE, "
                       "$XDG_STATE_HOME/edge_runtime)")
        q.add_argument("--population", help=f"population prior (default: <state dir>/personalize/{POPULATION_FILE} "
                       "if it exists, else the generic prior: the defaults)")
        q.add_argument("--json", action="store_true", help="print one JSON object")

    context_help = ("class=speech|music|noise|silence|other,level=DBFS,noise=DBFS,hour=0-24 (missing keys: "
                    "other, -30, -60, the current hour)")

    r = ps.add_parser("recommend", **parser_kwargs(
        "recommended parameters and presets ranked for a context",
        ("edge-runtime personalize recommend -u ana --context class=speech,level=-25",
         "edge-runtime personalize recommend -u ana --explore 0 --json      # the posterior mean")))
    common(r)
    # no -c: -c is a config file everywhere else
    r.add_argument("--context", default="", help=context_help)
    deprecated_alias(r, "-c", dest="context", new="--context")
    r.add_argument("--explore", type=float, default=0.0,
                   help="probability of offering a sample of the posterior instead of the setting most likely "
                   "to be accepted (default 0, as benchmarked)")
    r.add_argument("--seed", type=int, default=0, help="seed for the posterior samples (default 0: the same state "
                   "and context give the same answer)")
    r.set_defaults(func=cmd_recommend)

    f = ps.add_parser("feedback", **parser_kwargs(
        "record accept/reject/adjust for a recommended setting",
        ("edge-runtime personalize feedback -u ana --context class=speech --preset clear_speech --accept",
         "edge-runtime personalize feedback -u ana --params gain_db=3 --adjust gain_db=1.5")))
    common(f)
    f.add_argument("--context", default="", help=context_help)
    deprecated_alias(f, "-c", dest="context", new="--context")
    what = f.add_mutually_exclusive_group(required=True)
    what.add_argument("--params", help="the setting that was applied: name=value,... (missing = default)")
    what.add_argument("--preset", help="the preset that was applied")
    act = f.add_mutually_exclusive_group(required=True)
    act.add_argument("--accept", action="store_true", help="the user kept the setting")
    act.add_argument("--reject", action="store_true", help="the user undid the setting")
    act.add_argument("--adjust", metavar="NAME=VALUE,...", help="where the user moved the sliders (the values "
                     "are learned; parameters not named were left as offered)")
    f.set_defaults(func=cmd_feedback)

    i = ps.add_parser("info", **parser_kwargs(
        "what the user's model has learned",
        ("edge-runtime personalize info -u ana", "edge-runtime personalize info -u ana --json")))
    common(i)
    i.set_defaults(func=cmd_info)

    q = ps.add_parser("population", **parser_kwargs(
        "learn the population prior (what users want on average and how they differ) from users' state "
        "files; new users then start from it",
        ("edge-runtime personalize population", "edge-runtime personalize population a.state b.state --out pop.state")))
    common(q, user=False)
    q.add_argument("states", nargs="*", help="user state files (default: every <user>.state in "
                   "<state dir>/personalize)")
    q.add_argument("--out", help="where to write it (default: the --population path)")
    q.set_defaults(func=cmd_population)


def _kv(text: str, what: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        if "=" not in item:
            raise ConfigError(f"{what}: {item!r} is not NAME=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def parse_context(text: str):
    import time

    from .model import Context

    kv = _kv(text, "--context")
    unknown = sorted(set(kv) - set(CONTEXT_KEYS))
    if unknown:
        raise ConfigError(f"--context: unknown key {unknown[0]!r} (expected {', '.join(CONTEXT_KEYS)})")
    args = {}
    for k, v in kv.items():
        if k == "class":
            args["audio_class"] = v
        else:
            try:
                args[CONTEXT_KEYS[k]] = float(v)
            except ValueError:
                raise ConfigError(f"--context: {k}={v!r} is not a number") from None
    args.setdefault("hour", time.localtime().tm_hour + time.localtime().tm_min / 60.0)
    try:
        return Context(**args)
    except ValueError as e:
        raise ConfigError(f"--context: {e}") from None


def _params(text: str, what: str):
    from .model import check_params

    kv = _kv(text, what)
    try:
        return check_params({k: float(v) for k, v in kv.items()}, what)
    except ValueError as e:
        raise ConfigError(str(e) if str(e).startswith(what) else f"{what}: {e}") from None


def _dir(args) -> str:
    from ..paths import state_dir

    return os.path.join(str(state_dir(args.state_dir)), "personalize")


def state_path(args) -> str:
    from .model import check_user

    try:
        check_user(args.user)
    except ValueError as e:
        raise ConfigError(f"--user: {e}") from None
    return args.state or os.path.join(_dir(args), f"{args.user}.state")


def population_path(args) -> str:
    return args.population or os.path.join(_dir(args), POPULATION_FILE)


def _population(args):
    from .model import Population

    path = population_path(args)
    if args.population is None and not os.path.exists(path):
        return None
    return Population.load(path)


def _load(path: str, user: str, population):
    from .model import UserModel

    if not os.path.exists(path):
        return UserModel(user=user, population=population)
    return UserModel.load(path, population)


def _describe(model, ctx, explore: float, seed: int) -> dict:
    from .model import PARAM_NAMES

    rec = model.recommend(ctx, explore=explore, seed=seed)
    ranked = model.rank_presets(ctx, explore=explore, seed=seed)
    return {"params": {k: round(float(v), 4) for k, v in zip(PARAM_NAMES, rec)},
            "presets": [{"name": n, "score": round(s, 4)} for n, s in ranked], "feedback_count": model.n}


def _one_thread():
    """Small matrices: one BLAS thread is faster than several, and leaves the audio its cores
    (threadpoolctl comes with scikit-learn, the [learn] extra; without it BLAS keeps its default)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def cmd_recommend(args) -> int:
    if not 0.0 <= args.explore <= 1.0:
        raise ConfigError(f"--explore {args.explore:g} is outside 0..1")
    path = state_path(args)
    ctx = parse_context(args.context)
    with _one_thread():
        model = _load(path, args.user, _population(args))
        out = _describe(model, ctx, args.explore, args.seed)
    out.update({"user": args.user, "context": vars(ctx), "state": path})
    if args.json:
        print(json.dumps(out))
    else:
        print("params       " + "  ".join(f"{k}={v:g}" for k, v in out["params"].items()))
        print("presets      " + "  ".join(f"{p['name']} ({p['score']:.2f})" for p in out["presets"]))
        print(f"learned from {model.n} feedback(s)  ({path})")
    return 0


def cmd_feedback(args) -> int:
    from ..atomic import locked
    from .model import PARAM_NAMES, PRESETS

    path = state_path(args)
    ctx = parse_context(args.context)
    action = "accept" if args.accept else "reject" if args.reject else "adjust"
    params = _params(args.params, "--params") if args.params is not None else None
    population = _population(args)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the state folder: {e.strerror or e}") from None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path))
        except OSError as e:
            raise ConfigError(f"{path}.lock: cannot lock the state: {e.strerror or e}") from None
        stack.enter_context(_one_thread())
        model = _load(path, args.user, population)
        adjusted = None
        if args.adjust is not None:
            base = params
            if base is None:
                if args.preset not in model.presets:
                    raise ConfigError(f"--preset {args.preset!r} is not known (expected one of "
                                      f"{', '.join(model.presets)})")
                base = model.presets.get(args.preset, PRESETS.get(args.preset))
            merged = dict(zip(PARAM_NAMES, base))
            merged.update({k: v for k, v in _kv(args.adjust, "--adjust").items()})
            adjusted = _params(",".join(f"{k}={v}" for k, v in merged.items()), "--adjust")
        try:
            model.feedback(ctx, action, params=params, preset=args.preset, adjusted=adjusted)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        model.save(path)
    out = {"user": args.user, "action": action, "feedback_count": model.n, "state": path}
    print(json.dumps(out) if args.json else f"recorded     {action} ({model.n} feedback(s))  -> {path}")
    return 0


def cmd_info(args) -> int:
    path = state_path(args)
    population = _population(args)
    model = _load(path, args.user, population)
    out = {"user": args.user, "state": path, "exists": os.path.exists(path), "feedback_count": model.n,
           "accepted": model.accepts, "adjusted": model.adjusts, "rejected": model.rejects,
           "population": population_path(args) if population is not None else "generic (the defaults)",
           "presets": {k: list(v) for k, v in model.presets.items()}}
    print(json.dumps(out) if args.json else "\n".join(f"{k:<15} {v}" for k, v in out.items()))
    return 0


def cmd_population(args) -> int:
    from .model import Population, UserModel

    files = args.states or sorted(f for f in glob.glob(os.path.join(_dir(args), "*.state"))
                                  if os.path.basename(f) != POPULATION_FILE)
    if not files:
        raise ConfigError(f"population: no user state files (looked in {_dir(args)}; name them as arguments)")
    with _one_thread():
        users = [UserModel.load(f) for f in files]
        try:
            pop = Population.fit(users)
        except ValueError as e:
            raise ConfigError(f"population: {e} (the {len(files)} state files hold no feedback)") from None
        out = args.out or population_path(args)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        pop.save(out)
    res = {"population": out, "users": pop.n_users, "feedback": sum(u.n for u in users)}
    print(json.dumps(res) if args.json else f"population   learned from {pop.n_users} user(s), "
          f"{res['feedback']} feedback(s)  -> {out}")
    return 0


def dispatch(args) -> int:
    if not getattr(args, "personalize_command", None):
        raise ConfigError("personalize needs an action: recommend, feedback, info or population "
                          "(see `edge-runtime personalize -h`)")
    return args.func(args)
