"""Train the privacy guard's name detector: en_core_web_sm's NER, fine-tuned on names.

    .venv/bin/python tools/train_names.py [--examples 24000] [--epochs 4] [--out DIR]

Starts from the NER component of the pinned spaCy model (``en_core_web_sm`` 3.8.0, its
own hash-embedding CNN: no other component is touched) and trains it on
``tools/names_data.py``'s sentences: ``PERSON`` spans from the generator, and for every
other label what the original model itself predicts on the same text (pseudo-rehearsal,
so it keeps telling organisations and places from people). Writes the component
(``cfg``, ``model``, ``moves``) to ``src/edgewise/privacy/data/names/`` and prints each
file's sha256 for ``edgewise.privacy.names.NAMES_FILES``. Run by hand (about ten
minutes on one core); the files it wrote are committed, and the guard checks their
digests at load. Seeded, but floating-point kernels differ between CPUs, so a rerun on
another machine gives a slightly different model (and new digests).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from names_data import examples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=24_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "src/edgewise/privacy/data/names")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import spacy
    from spacy.tokens import Span
    from spacy.training import Example
    from spacy.util import filter_spans, fix_random_seed, minibatch

    from edgewise.privacy.nlp import MODEL_PACKAGE, verify_model

    verify_model()
    fix_random_seed(args.seed)
    teacher = spacy.load(MODEL_PACKAGE, disable=["parser"])
    nlp = spacy.load(MODEL_PACKAGE, exclude=["parser", "tagger", "attribute_ruler",
                                             "lemmatizer", "senter"])
    t0 = time.perf_counter()
    data = list(examples(args.examples, seed=args.seed))
    train: list[Example] = []
    for doc_teacher, (text, spans) in zip(teacher.pipe(t for t, _ in data), data,
                                          strict=True):
        doc = nlp.make_doc(text)
        if spans is None:  # real prose: the teacher's entities, persons included
            gold, others = [], [Span(doc, e.start, e.end, label=e.label_)
                                for e in doc_teacher.ents]
        else:
            gold = [s for a, b in spans
                    if (s := doc.char_span(a, b, label="PERSON", alignment_mode="expand"))]
            taken = {i for s in gold for i in range(s.start, s.end)}
            others = [Span(doc, e.start, e.end, label=e.label_) for e in doc_teacher.ents
                      if e.label_ != "PERSON" and not taken & set(range(e.start, e.end))]
        ref = nlp.make_doc(text)
        ref.ents = filter_spans([Span(ref, s.start, s.end, label=s.label_)
                                 for s in gold + others])
        train.append(Example(doc, ref))
    print(f"{len(train)} examples in {time.perf_counter() - t0:.0f} s", flush=True)

    rng = random.Random(args.seed)
    optimizer = nlp.resume_training()
    with nlp.select_pipes(enable=["ner"]):
        for epoch in range(args.epochs):
            rng.shuffle(train)
            losses: dict[str, float] = {}
            t1 = time.perf_counter()
            for batch in minibatch(train, size=32):
                nlp.update(batch, drop=0.2, sgd=optimizer, losses=losses)
            print(f"epoch {epoch + 1}: loss {losses.get('ner', 0):.1f} "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    nlp.get_pipe("ner").to_disk(args.out, exclude=["vocab"])
    for f in sorted(p for p in args.out.iterdir() if p.is_file()):
        print(f'    "{f.name}": "{hashlib.sha256(f.read_bytes()).hexdigest()}",')


if __name__ == "__main__":
    main()
