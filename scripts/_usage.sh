# Sourced by the scripts: `usage` prints the calling script's header comment (its usage
# lines), without the "#" and without any of the code below it.
usage() { sed -n '2,/^[^#]/{s/^# \{0,1\}//p}' "$0"; }
