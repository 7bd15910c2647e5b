"""Lists every option spelling in llama.cpp's common/arg.cpp, and whether it takes a value.

Usage: python3 llama_cpp_flags.py path/to/common/arg.cpp > tests/fixtures/llama-cpp-flags.txt

Each `add_opt(common_arg({names}, [{negated names},] [value hint,] help, handler))` is one option.
The handler's parameters say whether it takes a value: `(common_params &)` takes none,
`(common_params &, bool)` is a switch with a negated form, anything else takes one or two words.
"""

import re
import sys


def skip_literal(src, i):
    """The index of the quote closing the string or char literal that starts at i."""
    quote = src[i]
    i += 1
    while src[i] != quote:
        i += 2 if src[i] == "\\" else 1
    return i


def closing_paren(src, i):
    """The index of the parenthesis closing the one at i."""
    depth = 0
    while True:
        c = src[i]
        if c in "\"'":
            i = skip_literal(src, i)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1


def main(path):
    src = re.sub(r"^\s*//.*$", "", open(path).read(), flags=re.M)
    rows = []
    start = 0
    while (at := src.find("add_opt(common_arg(", start)) >= 0:
        body_start = at + len("add_opt(")
        body = src[body_start : closing_paren(src, body_start) + 1]
        start = body_start + len(body)
        lists = re.match(r"common_arg\(\s*\{([^}]*)\}\s*,\s*(\{([^}]*)\}\s*,)?", body)
        names = re.findall(r'"([^"]+)"', lists.group(1))
        negated = re.findall(r'"([^"]+)"', lists.group(3) or "")
        handler = re.search(r"\[\]\s*\(\s*common_params\s*&[^,)]*(,[^)]*)?\)", body)
        params = handler.group(1) or ""
        takes = "switch" if not params or re.fullmatch(r",\s*bool\s+\w+", params.strip()) else "value"
        rows += [(n, takes) for n in names] + [(n, "switch") for n in negated]
    print("# Every option spelling of llama.cpp's common/arg.cpp (0c1e570, llama-cpp-python 0.3.36's")
    print("# vendor/llama.cpp), and whether it takes a value; made by xtask/python/llama_cpp_flags.py.")
    for name, takes in rows:
        print(f"{name} {takes}")


if __name__ == "__main__":
    main(sys.argv[1])
