#!/usr/bin/python3
"""The bundled language-model example: a tiny GPT-style teacher and a smaller student.

Run as ``/usr/bin/python3 datasets/lm_example.py [OUTDIR]`` (default
``datasets/example-lm``); on CPU, with fixed seeds, it takes a few minutes and
needs no download: the text is the licences Debian ships in
``/usr/share/common-licenses``.  It writes

- ``teacher.h5``: the teacher's dense logits and its top-32 logits
  (``logits_topk``: indices, values, logsumexp) on the evaluated tokens;
- ``student.h5``: the student's dense logits (trained by distillation from the
  teacher at tau = 2 plus cross-entropy on the next token);
- ``PROVENANCE.md``: how they were made.

Both dumps are written by ``kdlens.export_lm`` (float16, gzip).  The model,
the tokenizer and the training loop are importable (tests/python uses them).
"""

import collections
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
from kdlens import export_lm  # noqa: E402

TEXTS = ["GPL-3", "GPL-2", "LGPL-2.1", "Apache-2.0", "GFDL-1.3", "MPL-2.0"]
LICENSES = "/usr/share/common-licenses"
VOCAB = 512          # word tokens, with <pad> = 0 and <unk> = 1
SEQ = 33             # tokens per evaluated sequence: 32 next-token predictions
EVAL_SEQS = 32       # 1,024 evaluated tokens
TOPK = 32
STEPS = 400         # of teacher and student each


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and position embeddings, ``n_blocks`` blocks, a final norm and a linear head.

    Returns the logits [B, T, V].  Causal: a token sees itself and earlier
    tokens only, so right padding changes nothing before it (the
    ``attention_mask`` argument is accepted and not needed)."""

    def __init__(self, vocab=VOCAB, d=64, n_blocks=2, heads=4, max_len=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(n_blocks))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx, attention_mask=None):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def words(text):
    """Lower-case words and single punctuation marks."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def corpus(vocab=VOCAB):
    """The licences as token ids, and the vocabulary (id -> word)."""
    tokens = []
    for name in TEXTS:
        with open(os.path.join(LICENSES, name), encoding="utf-8") as f:
            tokens += words(f.read())
    counts = collections.Counter(tokens)
    itos = ["<pad>", "<unk>"] + sorted(counts, key=lambda w: (-counts[w], w))[:vocab - 2]
    stoi = {w: i for i, w in enumerate(itos)}
    return np.array([stoi.get(w, 1) for w in tokens], dtype=np.int64), itos


def split(ids, n_eval=EVAL_SEQS * SEQ):
    """Training tokens (all but the last ``n_eval``) and evaluated sequences [EVAL_SEQS, SEQ]."""
    return torch.from_numpy(ids[:-n_eval]), torch.from_numpy(ids[-n_eval:]).view(-1, SEQ)


def train(model, data, steps, seed, teacher=None, tau=2.0, batch=32, length=SEQ, lr=3e-3):
    """Next-token training on random windows of ``data``; with a teacher, distillation
    (tau^2 KL at ``tau``, plus the cross-entropy, weighted equally)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        start = torch.randint(0, data.shape[0] - length - 1, (batch,), generator=g)
        window = torch.stack([data[s:s + length + 1] for s in start.tolist()])
        x, y = window[:, :-1], window[:, 1:]
        z = model(x)
        loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1))
        if teacher is not None:
            with torch.no_grad():
                zt = teacher(x)
            kd = F.kl_div(F.log_softmax(z / tau, -1), F.log_softmax(zt / tau, -1),
                          log_target=True, reduction="batchmean") / x.shape[1]
            loss = 0.5 * loss + 0.5 * tau * tau * kd
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def eval_loss(model, seqs):
    with torch.no_grad():
        z = model(seqs[:, :-1])
        return float(F.cross_entropy(z.reshape(-1, z.shape[-1]), seqs[:, 1:].reshape(-1)))


PROVENANCE = """# example-lm: a tiny GPT teacher and a distilled student (made by lm_example.py)

Remake with (CPU, deterministic seeds, a few minutes, no download):

```sh
/usr/bin/python3 datasets/lm_example.py datasets/example-lm
```

- Text: the licences Debian ships in `/usr/share/common-licenses` ({texts}),
  {n_tokens:,} word tokens (lower-cased words and punctuation marks); the
  vocabulary is the {vocab_m2} most frequent plus `<pad>` (0) and `<unk>` (1),
  C = {vocab} classes.
- Evaluated tokens: the last {n_eval_tok:,} tokens of the text, cut into
  {eval_seqs} sequences of {seq} (never seen in training); every token but a
  sequence's last is one sample, labelled by its next token: N = {n}.
  `/sequence_ids` and `/positions` say which sequence and position each is.
- Teacher: `TinyGPT(d=64, 2 blocks, 4 heads)`, {t_params:,} parameters,
  {t_steps} AdamW steps of 32 windows of {seq} tokens (seed 1); held-out
  cross-entropy {t_loss:.3f} nats.
- Student: `TinyGPT(d=32, 1 block, 2 heads)`, {s_params:,} parameters,
  {s_steps} steps (seed 2) of 0.5 x cross-entropy + 0.5 x tau^2 KL to the teacher
  at tau = 2; held-out cross-entropy {s_loss:.3f} nats.
- Written by `kdlens.export_lm.export_lm_checkpoint` (float16, gzip): the
  teacher's dense logits and top-{topk} logits (`logits_topk/indices`, `values`,
  `logsumexp`), the student's dense logits, checkpoint `final`.
- Made with torch {torch_version}.
"""


def main(out):
    torch.set_num_threads(2)
    ids, itos = corpus()
    data, seqs = split(ids)
    torch.manual_seed(1)
    teacher = train(TinyGPT(d=64, n_blocks=2, heads=4), data, steps=STEPS, seed=1)
    torch.manual_seed(2)
    student = train(TinyGPT(d=32, n_blocks=1, heads=2), data, steps=STEPS, seed=2,
                    teacher=teacher)
    os.makedirs(out, exist_ok=True)
    for name in ("teacher.h5", "student.h5"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    export_lm.export_lm_checkpoint(os.path.join(out, "teacher.h5"), teacher, seqs, "final",
                                   STEPS, topk=TOPK, role="teacher", model_name="tinygpt-d64")
    export_lm.export_lm_checkpoint(os.path.join(out, "student.h5"), student, seqs, "final",
                                   STEPS, role="student", model_name="tinygpt-d32")
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with open(os.path.join(out, "PROVENANCE.md"), "w", encoding="utf-8") as f:
        f.write(PROVENANCE.format(
            texts=", ".join(TEXTS), n_tokens=ids.shape[0], vocab=VOCAB, vocab_m2=VOCAB - 2,
            n_eval_tok=seqs.numel(), eval_seqs=EVAL_SEQS, seq=SEQ,
            n=EVAL_SEQS * (SEQ - 1), t_params=n_params(teacher), t_steps=STEPS,
            t_loss=eval_loss(teacher, seqs), s_params=n_params(student), s_steps=STEPS,
            s_loss=eval_loss(student, seqs), topk=TOPK, torch_version=torch.__version__))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "example-lm"))
