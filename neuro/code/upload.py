"""Code a user pastes or uploads: decoding files (BOMs, UTF-8, binary refused), truncation, language
detection and the messages that say what was done to the input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from neuro.code.corpus import normalize_lang
from neuro.code.syntax import detect_language, not_code_share

MAX_CODE_CHARS = 20_000      # pasted code beyond this is cut (the model sees max_length tokens anyway)

LOW_CONFIDENCE = 0.4         # below this detection confidence the language is called uncertain

EMPTY_MESSAGE = "No code to search: paste a function or upload a source file."

TRUNCATED_MESSAGE = "The code has {chars:,} characters; only the first {limit:,} are used."

TOKENS_MESSAGE = "Only the first {limit:,} of its {tokens:,} tokens are embedded."

NOT_CODE_MESSAGE = ("This does not look like C++, Java, Python, Go or JavaScript (at least {share:.0%} of it fails "
                    "to parse in the grammar that fits it best, and the detector's guess, {lang} at {confidence:.0%}, "
                    "rests on no cue of that language): the results may mean little.")

LOW_CONFIDENCE_MESSAGE = ("The language is uncertain (detected {lang} at {confidence:.0%} confidence); choose it if "
                          "it is wrong.")

BINARY_MESSAGE = "{name} looks like a binary file (it contains NUL bytes), not source code."

UNDECODABLE_MESSAGE = ("{name} is not UTF-8 text (byte 0x{byte:02x} at offset {offset:,} cannot be decoded); "
                       "save it as UTF-8 and upload it again.")

EMPTY_FILE_MESSAGE = "{name} is empty."


class CloneInputError(ValueError):
    """Input that cannot be searched at all (empty code); the message says what to do."""


@dataclass(frozen=True)
class Upload:
    """An uploaded file decoded to text, or why it could not be (`text` is None then)."""

    text: str | None
    encoding: str | None
    error: str | None = None


_BOMS = [(b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")]


def decode_upload(data: bytes, name: str = "The file") -> Upload:
    """UTF-8 (or UTF-16/32 with a byte-order mark) text of an upload; binary and other encodings are
    reported, not guessed, so a wrong decoding never silently becomes the query."""
    if not data:
        return Upload(None, None, EMPTY_FILE_MESSAGE.format(name=name))
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return Upload(data.decode(encoding), encoding)
            except UnicodeDecodeError as err:
                return Upload(None, None, UNDECODABLE_MESSAGE.format(name=name, byte=data[err.start],
                                                                      offset=err.start))
    if b"\x00" in data:
        return Upload(None, None, BINARY_MESSAGE.format(name=name))
    try:
        return Upload(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError as err:
        return Upload(None, None, UNDECODABLE_MESSAGE.format(name=name, byte=data[err.start], offset=err.start))


@dataclass(frozen=True)
class Query:
    """Checked query code: what is searched, its language, and what the user should be told."""

    code: str
    lang: str
    detected_lang: str
    confidence: float
    overridden: bool = False
    truncated: bool = False
    original_chars: int = 0
    looks_like_code: bool = True
    notices: tuple[str, ...] = ()

    @property
    def low_confidence(self) -> bool:
        return not self.overridden and self.confidence < LOW_CONFIDENCE


def prepare_query(code: str, lang: str | None = None, max_chars: int = MAX_CODE_CHARS) -> Query:
    """Truncate, detect the language (unless given) and flag text that does not look like code.

    Raises CloneInputError for empty code and CorpusError (a ValueError) for an unknown language name.
    """
    if code is None or not code.strip():
        raise CloneInputError(EMPTY_MESSAGE)
    notices = []
    original = len(code)
    truncated = original > max_chars
    if truncated:
        code = code[:max_chars]
        notices.append(TRUNCATED_MESSAGE.format(chars=original, limit=max_chars))
    detection = detect_language(code)
    failing = not_code_share(detection)
    looks_like_code = failing is None
    if not looks_like_code:
        notices.append(NOT_CODE_MESSAGE.format(share=failing, lang=detection.lang, confidence=detection.confidence))
    chosen = normalize_lang(lang) if lang else detection.lang
    query = Query(code, chosen, detection.lang, float(detection.confidence), lang is not None, truncated, original,
                  looks_like_code)
    if query.low_confidence and looks_like_code:
        notices.append(LOW_CONFIDENCE_MESSAGE.format(lang=detection.lang, confidence=detection.confidence))
    return Query(**{**asdict(query), "notices": tuple(notices)})
