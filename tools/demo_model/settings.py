"""Where the demo model's sources, work files and shipped folder live, and the pinned inputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from neuro import atomic
from neuro.code.corpus import LANGS as CORPUS_LANGS

REPO = Path(__file__).resolve().parents[2]

WORK_DIR = REPO / "cache" / "demo_train"

MODEL_DIR = REPO / "neuro" / "assets" / "demo_model"

# neuro's five languages, in alphabetical order: the order fixes the corpus build's deduplication and
# the pretokenized stream's shuffle, so it must not follow neuro's own order.
LANGS = tuple(sorted(CORPUS_LANGS))

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

GO_SRC = Path("/usr/share/go-1.19/src")

JDK_SRC_ZIP = Path("/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip")

LIBSTDCXX = Path("/usr/include/c++/12")

BOOST = Path("/usr/include/boost")

APT_PACKAGES = ("golang-1.19-src", "openjdk-17-source", "libboost1.81-dev", "libstdc++-12-dev")

JS_PACKAGES = (  # npm specs, pinned to the versions the shipped model was built from
    "lodash@4.18.1 express@5.3.0 underscore@1.13.8 async@3.2.6 moment@2.31.0 commander@14.0.3 "
    "chalk@5.6.2 yargs@18.2.0 axios@1.21.1 acorn@8.19.0 esprima@4.0.1 escodegen@2.1.0 "
    "estraverse@5.3.0 webpack@5.112.2 eslint@10.15.0 mocha@12.0.3 bluebird@3.7.2 q@2.0.3 "
    "handlebars@4.7.10 highlight.js@11.12.0 uglify-js@3.19.3 less@4.9.1 coffeescript@2.7.1 "
    "ramda@0.32.0 immutable@5.2.1 jquery@4.0.0 mathjs@15.2.0 three@0.187.0 sequelize@6.37.8 "
    "mongoose@9.12.1 knex@3.3.0 ws@8.23.0 socket.io@4.8.4 semver@7.8.6 minimatch@11.0.9 "
    "glob@14.0.6 source-map@0.8.0 jshint@2.13.6 terser@5.51.4 node-forge@1.4.3 ajv@8.20.0 "
    "chart.js@4.6.1 d3@7.9.2 core-js@3.51.0 rxjs@7.8.2 babel-core@6.26.3 @babel/core@7.29.13 "
    "@babel/parser@7.29.15 @babel/traverse@7.29.15 @babel/generator@7.29.15 "
    "webpack-dev-server@5.2.7 typescript@7.0.2 pdfjs-dist@5.6.205 marked@18.2.1 "
    "markdown-it@15.0.3 js-yaml@5.5.0 esbuild@0.28.2 rollup@4.68.8 jsdom@29.1.1 mysql@2.18.1 "
    "pg@8.23.1 fastify@5.12.8 sinon@22.1.0 chai@6.3.0 postcss@8.5.33 stylus@0.64.0 cheerio@1.2.0 "
    "luxon@3.7.2 dayjs@1.11.23 crypto-js@4.2.0 decimal.js@10.6.0 bn.js@5.2.5 elliptic@6.6.1 "
    "koa@3.3.0 pug@3.0.4 ejs@7.0.2 nunjucks@3.2.4 jasmine-core@7.0.2 qunit@3.0.0 "
    "browserify@17.0.1 grunt@1.6.3 karma@6.4.4 gulp@5.0.1 acorn-walk@8.3.5 recast@0.23.21 "
    "esquery@1.7.0 espree@11.2.0 regenerator-runtime@0.14.1 fs-extra@11.4.1 request@2.88.2 "
    "superagent@10.4.2 xml2js@0.6.2 sax@1.6.1 jsonwebtoken@9.0.3 passport@0.7.0 body-parser@2.4.0 "
    "connect@3.7.0 angular@1.8.3 backbone@1.6.1 knockout@3.5.3 preact@11.2.0 mithril@2.3.8 "
    "leaflet@1.9.4 ol@10.11.0 phaser@4.2.1 echarts@6.1.0 fabric@7.4.0 paper@0.12.20"
).split()

# Installed PyPI packages (import names) that top up the standard library's Python (requirements.txt
# and its dependencies); each capped like an npm package.
PYPI_PACKAGES = (
    "numpy pandas scipy sklearn transformers torch streamlit altair networkx sympy jinja2 requests "
    "click pygments huggingface_hub rich jsonschema fsspec pydantic"
).split()

# Programs the model must not have seen: the project's parallel demo corpus and HumanEval-X (a local
# copy beside the repository, or pass --exclude with its files).
PARALLEL_LAYOUTS = ("alone", "apart", "pairs", "all")  # tools.parallel_programs.documents.LAYOUTS

DEFAULT_EXCLUDE = (
    str(REPO.parent / "shared" / "data" / "humaneval-x" / "humaneval_*.jsonl.gz"),
    str(REPO / "neuro" / "assets" / "**" / "*.jsonl"),
    str(REPO / "neuro" / "assets" / "**" / "*.jsonl.gz"),
)

LICENSES = {
    "cpython-stdlib": "PSF-2.0 (Python Software Foundation License)",
    "golang-1.19-src": "BSD-3-Clause (Go license)",
    "openjdk-17-source": "GPL-2.0 with Classpath exception",
    "libstdc++-12": "GPL-3.0 with GCC Runtime Library exception",
    "boost-1.81": "BSL-1.0 (Boost Software License)",
}


log = logging.getLogger("tools.demo_model")


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (neuro's helper: a unique temporary file, then a rename)."""
    atomic.write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
