#!/usr/bin/python3
"""Build the English pre-training corpus for models/bert from Debian packages.

No English text corpus can be downloaded here, so the text comes from what
Debian ships (install them first, see tools/bert/README.md):

    dict-gcide        GCIDE: Webster's 1913 + later definitions and literary quotations
    wordnet-base      WordNet 3.0 synset glosses and their example sentences
    fortunes          fortune(6) cookies (the non-offensive set)
    debian-handbook   The Debian Administrator's Handbook, en-US (HTML)
    debian-reference-en, developers-reference, maint-guide   Debian manuals (HTML)
    gnu-standards     GNU Coding Standards and Information for Maintainers (HTML)
    python3-doc       the Python 3.11 documentation (HTML, prose paragraphs only)

Output, in the layout of google-research/bert's create_pretraining_data
(one sentence per line, a blank line between documents; next-sentence pairs
are drawn from consecutive lines of one document):

    OUT/train.txt     ~99% of documents
    OUT/heldout.txt   ~1% of documents, chosen by a hash of the document text
    OUT/manifest.json packages and versions, per-source document/sentence/byte counts

Cleaning: markup and dictionary notation removed, sentences split with a
regex that knows common abbreviations, sentences under 4 words or mostly
non-letters dropped, sentences of 30+ characters deduplicated across the whole
corpus (GCIDE repeats many WordNet glosses), documents that end up empty
dropped.  Deterministic: the same packages give byte-identical output.

    /usr/bin/python3 tools/bert/corpus.py --out /work/bert-train/corpus
"""

import argparse
import glob
import gzip
import hashlib
import html.parser
import json
import os
import re
import subprocess
import unicodedata

PACKAGES = ["dict-gcide", "wordnet-base", "fortunes", "debian-handbook",
            "debian-reference-en", "developers-reference", "maint-guide", "gnu-standards",
            "python3-doc"]

# ---------------------------------------------------------------- sentences

_ABBREV = {"e.g", "i.e", "etc", "cf", "vs", "mr", "mrs", "ms", "dr", "st", "prof", "no", "fig",
           "viz", "esp", "specif", "approx", "ca", "jr", "sr", "vol", "ch", "sec", "pl", "lat",
           "gr", "fr", "l", "f", "it", "sp", "obs", "r", "n", "a", "v", "adv", "prep", "conj",
           "inc", "ltd", "co", "corp", "ed", "eds", "p", "pp", "op", "cit", "al", "u.s", "a.m",
           "p.m", "ibid", "bk", "lit", "equiv", "usu", "ft", "in", "lb", "oz", "gen", "col",
           "capt", "gov", "rev", "hon", "mt"}
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text):
    """Split a paragraph into sentences at . ! ? followed by a capital."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    out, start = [], 0
    for m in _SPLIT.finditer(text):
        end = m.start()
        prev = text[start:end].rstrip("\"')]")
        last = prev.rsplit(" ", 1)[-1].rstrip(".").lower()
        if prev.endswith(".") and (last in _ABBREV or (len(last) == 1 and last.isalpha())):
            continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def good_sentence(s):
    words = s.split()
    if len(words) < 4 or len(s) > 800:
        return False
    letters = sum(ch.isalpha() for ch in s)
    if letters < 0.6 * len(s.replace(" ", "")):
        return False
    lower_words = sum(1 for w in words if re.fullmatch(r"[a-z][a-z'\-]*[,;:.!?]?", w))
    return lower_words >= 2


# ---------------------------------------------------------------- GCIDE

_GCIDE_CHARS = {"ae": "ae", "AE": "AE", "oe": "oe", "OE": "OE", "ng": "ng", "th": "th"}


def _gcide_char(m):
    code = m.group(1)
    if code in _GCIDE_CHARS:
        return _GCIDE_CHARS[code]
    letters = "".join(ch for ch in code if ch.isalpha())
    return letters if len(letters) == 1 else ""


def _gcide_clean(text):
    text = re.sub(r"\[([^\]\s]{1,3})\]", _gcide_char, text)    # [a^] [=e] [ae] character codes
    text = re.sub(r"\\[^\\]*\\", " ", text)                       # \Pro*nun"ci*a`tion\
    for _ in range(2):
        text = re.sub(r"\[[^\[\]]*\]", " ", text)                 # etymology, [1913 Webster], [R.]
    text = re.sub(r"\((?:[A-Z][A-Za-z]*\.?\s?(?:&\s)?){1,4}\)", " ", text)  # (Zool.) (Class. Myth.)
    text = re.sub(r"\([^()]*[\"`*][^()]*\)", " ", text)           # leftover pronunciations
    text = re.sub(r"--\s?[A-Z][\w.&' ]{0,40}?\.(?=\s|$)", " ", text)  # --Shak. citations
    text = re.sub(r"[{}]", "", text)
    text = text.replace("Gr. ?", "Gr.").replace(" ?.", ".")
    text = re.sub(r"\s*--\s*", " - ", text)
    return re.sub(r"\s+", " ", text).strip()


def gcide_documents():
    path = "/usr/share/dictd/gcide.dict.dz"
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        raw = f.read()
    start = raw.find("\nA \\A\\")
    entries = re.split(r"\n\n(?=\S)", raw[start if start > 0 else 0:])
    for entry in entries:
        lines = entry.strip("\n").split("\n")
        if not lines or " \\" not in lines[0]:
            continue
        head = _gcide_clean(lines[0].split(" \\", 1)[0])
        # Skip the head line and any continuation of an unclosed etymology bracket.
        depth = lines[0].count("[") - lines[0].count("]")
        i = 1
        while depth > 0 and i < len(lines):
            depth += lines[i].count("[") - lines[i].count("]")
            i += 1
        body = " ".join(l.strip() for l in lines[i:])
        body = _gcide_clean(body)
        senses = re.split(r"(?:^|\s)\d{1,2}\.\s", body)
        sents = []
        for sense in senses:
            ss = split_sentences(sense)
            if ss and head and ss[0][:1].isupper() and good_sentence(ss[0]):
                ss[0] = f"{head}: {ss[0]}"
            sents.extend(ss)
        yield "gcide", sents


# ---------------------------------------------------------------- WordNet

def wordnet_documents():
    for pos in ("noun", "verb", "adj", "adv"):
        with open(f"/usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                fields, gloss = line.split("|", 1)
                parts = fields.split()
                n = int(parts[3], 16)
                words = [re.sub(r"\(\w+\)$", "", parts[4 + 2 * k]).replace("_", " ")
                         for k in range(n)]
                defs, examples = [], []
                for piece in gloss.strip().split("; "):
                    piece = piece.strip().strip(";").strip()
                    if piece.startswith('"'):
                        ex = piece.strip('"').strip()
                        if ex and ex[-1] not in ".!?":
                            ex += "."
                        examples.append(ex[:1].upper() + ex[1:])
                    elif piece:
                        defs.append(piece)
                sents = []
                if defs:
                    d = "; ".join(defs)
                    sents.append(f"{', '.join(words[:3])}: {d}.")
                sents.extend(examples)
                yield "wordnet", sents


# ---------------------------------------------------------------- fortunes

def fortune_documents():
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        name = os.path.basename(path)
        if "." in name or os.path.islink(path) or name in ("art", "ascii-art"):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for cookie in re.split(r"\n%\n", text):
            lines = [l for l in cookie.split("\n") if not re.match(r"^\s*--\s", l)]
            para = " ".join(l.strip() for l in lines)
            yield "fortunes", split_sentences(para)


# ---------------------------------------------------------------- HTML manuals

class _Paragraphs(html.parser.HTMLParser):
    """Collect the text of <p>/<li>/<dd>/<dt>/<div class="para">; a heading starts a new document."""
    BLOCK = {"p", "li", "dd", "dt", "blockquote", "td"}
    SKIP = {"pre", "script", "style", "head", "title", "nav"}
    HEAD = {"h1", "h2", "h3"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.docs = [[]]
        self.buf = []
        self.skip = 0
        self.depth = 0
        self.divs = []

    def _flush(self):
        text = " ".join("".join(self.buf).split())
        self.buf = []
        if text:
            self.docs[-1].append(text)

    def handle_starttag(self, tag, attrs):
        if tag == "div":        # Publican (debian-handbook) writes <div class="para">
            is_para = "para" in (dict(attrs).get("class") or "").split()
            self.divs.append(is_para)
            if is_para:
                self._flush()
                self.depth += 1
        elif tag in self.SKIP:
            self.skip += 1
        elif tag in self.HEAD:
            self._flush()
            if self.docs[-1]:
                self.docs.append([])
        elif tag in self.BLOCK:
            self._flush()
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "div":
            if self.divs and self.divs.pop():
                self._flush()
                self.depth = max(0, self.depth - 1)
        elif tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self._flush()
            self.depth = max(0, self.depth - 1)

    def handle_data(self, data):
        if not self.skip and self.depth:
            self.buf.append(data)


def html_documents(source, paths):
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            p = _Paragraphs()
            p.feed(f.read())
            p.close()
            p._flush()
        for paras in p.docs:
            sents = []
            for para in paras:
                sents.extend(split_sentences(para))
            yield source, sents


def manual_sources():
    g = lambda pat: sorted(glob.glob(pat))
    py = "/usr/share/doc/python3.11/html"
    return [
        ("debian-handbook", g("/usr/share/doc/debian-handbook/html/en-US/*.html")),
        ("debian-reference", g("/usr/share/debian-reference/*.en.html")),
        ("developers-reference", [p for p in g("/usr/share/developers-reference/*.html")
                                  if os.path.basename(p) not in
                                  ("developers-reference.html", "index.html", "search.html")]),
        ("maint-guide", g("/usr/share/doc/maint-guide/html/*.en.html")),
        ("gnu-standards", g("/usr/share/doc/gnu-standards/*.html")),
        ("python3-doc", [p for sub in ("tutorial", "faq", "howto", "reference", "library",
                                       "using", "extending", "whatsnew")
                         for p in g(f"{py}/{sub}/*.html")] + [f"{py}/glossary.html"]),
    ]


# ---------------------------------------------------------------- main

def normalise(s):
    s = unicodedata.normalize("NFC", s)
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", s).strip()


def package_versions():
    out = {}
    for p in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p], capture_output=True, text=True)
        out[p] = r.stdout.strip() if r.returncode == 0 else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/work/bert-train/corpus")
    ap.add_argument("--heldout-percent", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    versions = package_versions()
    missing = [p for p, v in versions.items() if not v]
    if missing:
        raise SystemExit(f"install first: apt-get install -y {' '.join(missing)}")

    generators = [gcide_documents(), wordnet_documents(), fortune_documents()]
    generators += [html_documents(src, paths) for src, paths in manual_sources()]

    seen_docs, seen_sents = set(), set()
    stats = {}
    files = {"train": open(os.path.join(args.out, "train.txt"), "w", encoding="utf-8"),
             "heldout": open(os.path.join(args.out, "heldout.txt"), "w", encoding="utf-8")}
    for gen in generators:
        for source, sents in gen:
            kept = []
            for s in sents:
                s = normalise(s)
                if not good_sentence(s):
                    continue
                if len(s) >= 30:
                    h = hashlib.sha1(s.lower().encode()).digest()[:10]
                    if h in seen_sents:
                        continue
                    seen_sents.add(h)
                kept.append(s)
            if not kept:
                continue
            text = "\n".join(kept)
            dh = hashlib.sha1(text.encode()).digest()
            if dh in seen_docs:
                continue
            seen_docs.add(dh)
            split = "heldout" if int.from_bytes(dh[:4], "big") % 100 < args.heldout_percent else "train"
            files[split].write(text + "\n\n")
            st = stats.setdefault(source, {"train": [0, 0, 0], "heldout": [0, 0, 0]})
            st[split][0] += 1
            st[split][1] += len(kept)
            st[split][2] += len(text.encode()) + 2
    for f in files.values():
        f.close()

    manifest = {"packages": versions, "heldout_percent": args.heldout_percent,
                "sources": {src: {split: dict(zip(("documents", "sentences", "bytes"), v))
                                  for split, v in st.items()} for src, st in stats.items()}}
    for split in ("train", "heldout"):
        manifest[split + "_bytes"] = os.path.getsize(os.path.join(args.out, split + ".txt"))
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(json.dumps(manifest, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
