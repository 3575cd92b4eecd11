# Sourced by the operator scripts: read one field of a JSON document with the venv's Python.
# Usage: json_field "$json" name
json_field() {
    python -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}
