"""Fine-tune the offline MiniLM-L6 with the Hugging Face Trainer and prune it with one callback.

The task, built from local text: which genre (comedy, tragedy or history) a Shakespeare speech
comes from. Speeches of one whole play per genre are held out for testing (Twelfth Night, Hamlet,
Henry V), so the test asks about plays the model never saw. A dense fine-tune and a pruned one
start from the same weights and train the same way; the script prints accuracy and sparsity.

    python examples/hf_trainer_minilm.py                    # movement pruning to 50% of encoder weights
    python examples/hf_trainer_minilm.py --recipe heads     # attention heads and MLP channels removed
    python examples/hf_trainer_minilm.py --recipe my.yaml   # any recipe file or shipped name
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: the pretrained model is an asset
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402

import pruneaware as pa  # noqa: E402
from pruneaware.data.assets import asset_path  # noqa: E402
from pruneaware.data.shakespeare import speeches, to_plain_text  # noqa: E402

GENRES = ("comedies", "tragedies", "histories")
HELDOUT = {"comedies": "twelfth-night", "tragedies": "hamlet", "histories": "henry-v"}
RECIPES = {
    "movement": {  # hard movement pruning (Sanh et al. 2020): keep the weights fine-tuning moves away from zero
        "name": "movement-50",
        "pruning": {"criterion": "movement", "schedule": {"type": "cubic", "final": 0.5, "begin": 0.1, "end": 0.7, "every": 0.05}},
    },
    "gmp": {
        "name": "gmp-50",
        "pruning": {"criterion": "magnitude", "schedule": {"type": "cubic", "final": 0.5, "begin": 0.1, "end": 0.7, "every": 0.05}},
    },
    "heads": {  # whole heads and MLP channels removed while fine-tuning
        "name": "heads-25",
        "structured": {"heads": True, "schedule": {"type": "linear", "final": 0.25, "begin": 0.1, "end": 0.5, "every": 0.1}},
    },
}


class Speeches(torch.utils.data.Dataset):
    """Tokenized speeches with their genre label."""

    def __init__(self, texts: list[str], labels: list[int], tokenizer, max_length: int):
        self.encoded = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
        self.labels = torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**{key: value[index] for key, value in self.encoded.items()}, "labels": self.labels[index]}


def genre_speeches(per_genre_train: int, per_genre_test: int, seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Balanced (speech, genre) pairs: training from all but the held-out play of each genre, testing from that play."""
    root, rng = asset_path("shakespeare"), random.Random(seed)
    train, test = [], []
    for label, genre in enumerate(GENRES):
        pool = {"train": [], "test": []}
        for path in sorted((root / genre).glob("*.md")):
            split = "test" if path.stem == HELDOUT[genre] else "train"
            pool[split] += speeches(to_plain_text(path.read_text(encoding="utf-8")), min_words=20)
        train += [(text, label) for text in rng.sample(pool["train"], per_genre_train)]
        test += [(text, label) for text in rng.sample(pool["test"], per_genre_test)]
    return train, test


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: Speeches) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), 64):
        batch = [data[i] for i in range(start, min(start + 64, len(data)))]
        inputs = {key: torch.stack([item[key] for item in batch]) for key in ("input_ids", "attention_mask", "token_type_ids")}
        correct += int((model(**inputs).logits.argmax(-1) == torch.stack([item["labels"] for item in batch])).sum())
    return correct / len(data)


def fine_tune(train: Speeches, recipe, args: argparse.Namespace, output: str):
    transformers.set_seed(args.seed)  # the same classifier initialization for both runs
    model = transformers.AutoModelForSequenceClassification.from_pretrained(asset_path("minilm"), num_labels=len(GENRES))
    callbacks = [pa.integrations.HFPruningCallback(recipe)] if recipe else []
    training = transformers.TrainingArguments(
        output_dir=output, per_device_train_batch_size=16, num_train_epochs=args.epochs, learning_rate=1e-4,
        warmup_steps=10, weight_decay=0.01, seed=args.seed, use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )
    started = time.perf_counter()
    transformers.Trainer(model=model, args=training, train_dataset=train, callbacks=callbacks).train()
    return model, (callbacks[0] if callbacks else None), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="movement", help=f"one of {sorted(RECIPES)}, a shipped recipe name, or a YAML path")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--train-per-genre", type=int, default=150)
    parser.add_argument("--test-per-genre", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormal Adam moments slow CPU training
    transformers.logging.set_verbosity_error()

    tokenizer = transformers.AutoTokenizer.from_pretrained(asset_path("minilm"))
    train_pairs, test_pairs = genre_speeches(args.train_per_genre, args.test_per_genre, args.seed)
    train = Speeches(*map(list, zip(*train_pairs)), tokenizer, args.max_length)
    test = Speeches(*map(list, zip(*test_pairs)), tokenizer, args.max_length)
    recipe = RECIPES.get(args.recipe, args.recipe)

    with tempfile.TemporaryDirectory() as output:
        dense, _, dense_seconds = fine_tune(train, None, args, output)
        pruned, callback, pruned_seconds = fine_tune(train, recipe, args, output)
    summary = callback.pruner.summary()
    heads = lambda model: sum(layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer)  # noqa: E731
    count = lambda model: sum(p.numel() for p in model.bert.encoder.parameters())  # noqa: E731
    nonzero = lambda model: sum(int(torch.count_nonzero(p)) for p in model.bert.encoder.parameters())  # noqa: E731
    print(f"recipe {args.recipe!r}: {len(train)} training speeches, {len(test)} test speeches from held-out plays, "
          f"{args.epochs:g} epochs, seed {args.seed}, torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads")
    print(f"{'':<8}{'test acc':>10}{'heads':>8}{'encoder params':>16}{'nonzero':>12}{'seconds':>10}")
    for name, model, seconds in (("dense", dense, dense_seconds), ("pruned", pruned, pruned_seconds)):
        print(f"{name:<8}{accuracy(model, test):>10.2%}{heads(model):>8}{count(model):>16,}{nonzero(model):>12,}{seconds:>10.1f}")
    print(f"sparsity of the pruned layers, counted from the weights: {summary.sparsity:.2%}; "
          f"encoder parameters kept: {count(pruned) / count(dense):.3f}x")


if __name__ == "__main__":
    main()
