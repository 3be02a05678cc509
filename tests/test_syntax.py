"""tree-sitter alignment (bytes vs characters, multi-byte text) and language detection."""

import pytest

from neuro.code.syntax import align_tokens, char_to_byte_offsets, detect_language, parse_errors

CODES = {
    "python": 'def greet(name):\n    """Say hi."""\n    msg = "héllo → " + name\n    return msg.upper()\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc Greet(name string) string {\n\tmsg := "héllo → " + name\n'
          '\treturn fmt.Sprintf("%s!", msg)\n}\n',
    "java": 'import java.util.*;\n\nclass Solution {\n    public String greet(String name) {\n'
            '        String msg = "héllo → " + name;\n        return msg.toUpperCase();\n    }\n}\n',
    "cpp": '#include <string>\n\nstd::string greet(const std::string& name) {\n'
           '    std::string msg = "héllo → " + name;\n    return msg;\n}\n',
    "javascript": 'function greet(name) {\n  const msg = "héllo → " + name;\n  return msg.toUpperCase();\n}\n',
}
STRING_NODES = {"string_content", "interpreted_string_literal_content", "string_fragment", "string_literal"}


@pytest.mark.parametrize("lang", sorted(CODES))
def test_alignment_with_multibyte_text(lang):
    code = CODES[lang]
    assert parse_errors(code, lang) == 0
    arrow = code.index("→")
    name_after = code.index("name", arrow)  # the identifier after the multi-byte literal
    nodes = align_tokens(code, lang, [(arrow, arrow + 1), (arrow - 1, arrow), (name_after - 1, name_after + 4),
                                      (0, 0)])
    assert nodes[0].type in STRING_NODES
    # the byte range reported is the node's, and it really contains the arrow's bytes
    raw = code.encode()
    assert "→".encode() in raw[nodes[0].start_byte:nodes[0].end_byte]
    assert nodes[1].type is None            # whitespace-only token
    assert nodes[2].type == "identifier"    # " name": leading space ignored, bytes shifted by the é and →
    assert raw[nodes[2].start_byte:nodes[2].end_byte] == b"name"
    assert nodes[3].type is None            # empty span (special token)


@pytest.mark.parametrize("lang", sorted(CODES))
def test_language_detection(lang):
    result = detect_language(CODES[lang])
    assert result.lang == lang
    assert 0.5 < result.confidence <= 1.0


def test_detection_is_unsure_on_ambiguous_text():
    assert detect_language("x = 1").confidence < 0.9
    with pytest.raises(ValueError):
        detect_language("   \n")


def test_char_to_byte_offsets():
    assert char_to_byte_offsets("aé→b") == [0, 1, 3, 6, 7]


def test_parse_errors_counts_broken_code():
    assert parse_errors("def f(:\n  return", "python") > 0
