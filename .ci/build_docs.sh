#!/usr/bin/env bash
# Build the documentation site with mkdocs (material theme, mkdocstrings API reference) and fail
# on any warning: a broken link, a missing page, an unresolved cross-reference or a docstring
# that does not parse.
#
#   .ci/build_docs.sh              # builds into site/ (gitignored)
#   SITE_DIR=/tmp/site .ci/build_docs.sh
#
# Needs the dev extra (mkdocs, mkdocs-material, mkdocstrings[python]) in the active environment.
# Nothing is fetched from the network: the theme's web fonts are off (theme.font: false) and the
# API reference is built by static analysis of src/ (griffe), so vllm, ray or torch need not be
# installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Material for MkDocs prints a banner about MkDocs 2.0 on every build; it is not a warning.
export NO_MKDOCS_2_WARNING=1

mkdocs build --strict --site-dir "${SITE_DIR:-site}"
