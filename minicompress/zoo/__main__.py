"""Command line: ``python -m minicompress.zoo {list,train NAME,check}``."""

from __future__ import annotations

import argparse
import sys

from minicompress import text, zoo
from minicompress.data import fashion_mnist
from minicompress.lm import bits_per_char
from minicompress.train import evaluate


def _describe(record: dict) -> str:
    if "validation_bits_per_char" in record:
        return f"{record['validation_bits_per_char']:.3f} bits/char"
    return f"{100 * record['test_accuracy']:.2f}%"


def _check_language_model(name: str) -> bool:
    # bits/char are averaged in float64 but the forward pass differs by CPU kernel at ~1e-6
    measured = bits_per_char(zoo.pretrained(name), text.split("validation")).mean
    recorded = zoo.info(name)["validation_bits_per_char"]
    ok = abs(measured - recorded) < 1e-3
    print(f"{name:10s} measured {measured:.4f} bits/char  recorded {recorded:.4f}"
          f"  {'ok' if ok else 'MISMATCH'}")  # fmt: skip
    return ok


def main(argv: list[str] | None = None) -> int:
    """List, train, or re-check the shipped baselines."""
    parser = argparse.ArgumentParser(prog="python -m minicompress.zoo", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the zoo's models and their recorded accuracy")
    p_train = sub.add_parser("train", help="train a model from its recipe and save it")
    p_train.add_argument("name", choices=zoo.names())
    sub.add_parser("check", help="recompute every shipped model's test accuracy")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in zoo.names():
            record = zoo.info(name)
            print(f"{name:10s} {_describe(record)}  {record['description']}")
    elif args.command == "train":
        record = zoo.train(args.name, progress=sys.stderr.isatty())
        print(f"{args.name}: {_describe(record)} ({record['train_seconds']} s)")
    else:
        test_x, test_y = fashion_mnist("test")
        failed = False
        for name in zoo.names():
            if zoo.RECIPES[name].is_language_model:
                failed |= not _check_language_model(name)
                continue
            accuracy = evaluate(zoo.pretrained(name), test_x, test_y)
            recorded = zoo.info(name)["test_accuracy"]
            ok = round(accuracy * len(test_y)) == round(recorded * len(test_y))
            failed |= not ok
            print(
                f"{name:10s} measured {100 * accuracy:.2f}%  recorded {100 * recorded:.2f}%"
                f"  {'ok' if ok else 'MISMATCH'}"
            )
        return int(failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
