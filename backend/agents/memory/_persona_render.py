"""A persona profile as a few lines of text a trader recognises (for prompts and embeddings)."""

from __future__ import annotations

from typing import Any

from backend.memory.models import PersonaProfile

__all__ = ["render_constraint", "render_profile"]


def _pct(x: Any, places: int = 0) -> str:
    return f"{float(x):.{places}%}" if isinstance(x, int | float) else "?"


def _share(x: Any) -> str:
    return _pct(x, 0 if isinstance(x, int | float) and x >= 0.01 else 1)


def _usd(x: Any) -> str:
    return f"{float(x):,.0f} USDC" if isinstance(x, int | float) else "?"


def _signed_usd(x: Any) -> str:
    return f"{float(x):+,.0f} USDC" if isinstance(x, int | float) else "?"


def render_constraint(c: dict[str, Any]) -> str:
    """One hard constraint in words (``max risk 2% per trade``)."""
    kind, value = c.get("kind"), c.get("value")
    match kind:
        case "max_risk_per_trade":
            return f"max risk {_pct(value, 1)} per trade"
        case "max_position_fraction":
            return f"max position {_pct(value, 1)} of equity"
        case "max_position_notional":
            return f"max position {_usd(value)}"
        case "max_loss_per_trade":
            return f"max loss {_usd(value)} per trade"
        case "max_leverage":
            return f"max leverage {float(value):g}x" if isinstance(value, int | float) else "?"
        case "max_daily_loss":
            return f"max daily loss {_pct(value, 1)}"
        case "forbidden_assets":
            return "never " + ", ".join(map(str, value or []))
        case "allowed_assets":
            return "only " + ", ".join(map(str, value or []))
        case "no_memecoins":
            return "no memecoins"
        case "long_only":
            return "long only"
        case "no_leverage":
            return "no leverage"
    return f"{kind}={value}"


def _hours(h: Any) -> str:
    if not isinstance(h, int | float):
        return "?"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def render_profile(profile: PersonaProfile) -> str:
    """A compact multi-line summary: trading habits from fills, results, risk, the trader's
    constraints and goals, and what they say about themselves. Lines with no data are left
    out; amounts in USDC, shares in percent, times in UTC."""
    a = {name: attr.value for name, attr in profile.attributes.items()}
    d = {name: attr.detail for name, attr in profile.attributes.items()}
    lines = [
        f"Trader {profile.trader_id} - profile v{profile.version} as of "
        f"{profile.as_of:%Y-%m-%d %H:%M} UTC."
    ]
    trades = []
    if a.get("preferred_assets"):
        shares = d["preferred_assets"].get("shares", {})
        top = [f"{k} {_share(shares.get(k))}" for k in a["preferred_assets"][:4]]
        trades.append("trades " + ", ".join(top))
    if a.get("long_share") is not None:
        trades.append(f"{_pct(a['long_share'])} of opening notional long")
    if a.get("style"):
        trades.append(f"{a['style']} style (median hold {_hours(a.get('holding_period'))})")
    if trades:
        lines.append("Habits: " + "; ".join(trades) + ".")
    activity = []
    if a.get("trade_frequency") is not None:
        fills = d["trade_frequency"].get("fills_per_active_day")
        activity.append(f"{a['trade_frequency']:.1f} orders ({fills:.0f} fills) per active day")
    if isinstance(a.get("position_notional"), dict):
        pn = a["position_notional"]
        activity.append(f"fill size median {_usd(pn['median'])}, p90 {_usd(pn['p90'])}")
    if a.get("active_hours"):
        activity.append("busiest hours " + ", ".join(f"{h:02d}h" for h in a["active_hours"]))
    if activity:
        lines.append("Activity: " + "; ".join(activity) + " UTC.")
    results = []
    if a.get("win_rate") is not None:
        results.append(f"win rate {_pct(a['win_rate'])} of closes")
    if isinstance(a.get("pnl_profile"), dict):
        pnl = a["pnl_profile"]
        pf = pnl.get("profit_factor")
        pf_text = f", profit factor {pf:.2f}" if isinstance(pf, int | float) else ""
        results.append(f"realised PnL {_signed_usd(pnl.get('total'))}{pf_text}")
    if a.get("max_drawdown") is not None:
        results.append(f"max drawdown {_usd(a['max_drawdown'])}")
    if results:
        lines.append("Results: " + "; ".join(results) + ".")
    if a.get("risk_tolerance"):
        lines.append(f"Risk: {a['risk_tolerance']} (score {d['risk_tolerance'].get('score')}).")
    if profile.attributes.get("constraints") is not None:
        rules = [render_constraint(c) for c in a["constraints"] or []]
        if rules:
            lines.append("Hard constraints: " + "; ".join(rules) + ".")
    if a.get("goals"):
        lines.append("Goals: " + " | ".join(a["goals"][-3:]) + ".")
    said = []
    for name in ("risk_tolerance", "style", "holding_period", "preferred_assets"):
        value = a.get(f"stated_{name}")
        if value:
            text = ", ".join(value) if isinstance(value, list) else str(value)
            said.append(f"{name.replace('_', ' ')} {text}")
    if said:
        lines.append("Says: " + "; ".join(said) + ".")
    return "\n".join(lines)
