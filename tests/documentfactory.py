"""Test documents: Markdown built from labelled held-out PhraseBank sentences, a hand-written release, small PDFs."""

from __future__ import annotations

from pathlib import Path

from finsent.data.corpus import load_data
from finsent.data.labels import LABELS
from finsent.data.splits import split_data

PRESS_RELEASE = """# Acme Oyj interim report January-September 2024

Acme Inc. reported net sales of EUR 13.1 mn. in Q3, up from EUR 12.0 mn. a year earlier. Operating profit rose to approx. EUR 2.5 mn. The operating margin improved to 19.1 % (15.2 %).

## Highlights

- Net sales grew by 9.2 % to EUR 13.1 mn.
- Order intake increased by 14 % to EUR 15.0 mn.
- Earnings per share were EUR 0.25 (0.18).

| EUR mn | Q3 2024 | Q3 2023 |
|---|---|---|
| Net sales | 13.1 | 12.0 |

## Outlook

Acme expects its net sales for 2025 to grow by 5-10 % from 2024. The company expects operating profit to improve next year.

## Risks

Weak demand in Germany led to the closure of the Hamburg plant. Some 120 employees were made redundant. Raw material costs rose sharply and squeezed margins in the paper segment.
"""


def held_out_sentences(data_zip: Path, per_label: int) -> dict[str, list[str]]:
    """The first `per_label` well-formed (capitalised, ending with a period) test-split AllAgree sentences of each label.

    The split is the one training makes with its default seed, so the sentences were not trained on."""
    test = split_data(load_data(data_zip, "all"), seed=42).test
    out = {label: [] for label in LABELS}
    for text, y in zip(test.texts, test.labels):
        if text[0].isupper() and text.endswith(".") and len(out[LABELS[y]]) < per_label:
            out[LABELS[y]].append(text)
    return out


def sectioned_markdown(picked: dict[str, list[str]]) -> tuple[str, list[tuple[str, str, list[str]]]]:
    """A Markdown document: one section of positives, one of negatives, one of neutrals, two paragraphs each."""
    parts, plan = [], []
    for title, label in (("Good news", "positive"), ("Bad news", "negative"), ("Routine matters", "neutral")):
        sents = picked[label]
        half = len(sents) // 2
        parts.append(f"## {title}\n\n{' '.join(sents[:half])}\n\n{' '.join(sents[half:])}\n")
        plan.append((title, label, sents))
    return "# Company news\n\n" + "\n".join(parts), plan


def _escape_pdf(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(
    path: Path, pages: list[list[str]], outline: list[tuple[str, int]] = (), password: str | None = None
) -> Path:
    """A real PDF with Helvetica text lines per page, optional outline entries (title, page) and encryption."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
            NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
        }
    )
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        ops = "".join(f"({_escape_pdf(line)}) Tj T* " for line in lines)
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 10 Tf 14 TL 50 740 Td {ops}ET".encode("latin-1"))
        page.replace_contents(stream)
    for title, page_index in outline:
        writer.add_outline_item(title=title, page_number=page_index)
    if password:
        writer.encrypt(password, algorithm="AES-128")
    with open(path, "wb") as f:
        writer.write(f)
    return path
