# Turns `vdiskfs --experimental-dump-help` (swift-argument-parser's description of every command,
# argument and option) into the man(7) pieces that packaging/vdiskfs.1.in leaves to the parser:
# the SYNOPSIS lines, the COMMANDS section and the EXIT STATUS list. Run with
#   jq -r --arg part synopsis|commands|exit -f packaging/manpage.jq
# so the page cannot drift from what the binary accepts.

# roff escapes: backslashes, and hyphens in option names and values must be \- to stay ASCII.
def roff: gsub("\\\\"; "\\e") | gsub("-"; "\\-");
def text: gsub("\\\\"; "\\e") | if test("^[.']") then "\\&" + . else . end;
def flag: if .kind == "long" then "--" + .name else "-" + .name end;
def names: [.names[]? | "\\fB" + (flag | roff) + "\\fR"] | join(", ");
def value: if .kind == "option" then " \\fI" + (.valueName | roff) + "\\fR" else "" end;
def visible: .arguments // [] | map(select(.shouldDisplay and (.names // [] | map(.name)
  | (index("help") | not) and (index("version") | not))));

# One synopsis line: vdiskfs mount [-o opts]... [-f] IMAGE MOUNTPOINT
def synopsis(prefix):
  ".PP\n\\fB" + prefix + "\\fR"
  + ([visible[] | select(.kind != "positional")
      | " [" + (.names | (map(select(.kind == "short")) + .)[0] | "\\fB" + (flag | roff) + "\\fR")
        + value + "]" + (if .isRepeating then "..." else "" end)] | join(""))
  + ([visible[] | select(.kind == "positional") | " \\fI" + (.valueName | ascii_upcase | roff) + "\\fR"]
     | join(""));

def argument:
  ".TP\n"
  + (if .kind == "positional" then "\\fI" + (.valueName | ascii_upcase | roff) + "\\fR"
     else names + value end)
  + "\n" + (.abstract | text)
  + (if .allValues then " One of: " + (.allValues | join(", ")) + "." else "" end)
  + (if .defaultValue and .kind != "flag" then " Default: " + (.defaultValue | text) + "." else "" end);

.command as $root
| [$root.subcommands[] | select(.commandName != "help")] as $commands
| if $ARGS.named.part == "synopsis" then
    $commands[] | synopsis("vdiskfs " + .commandName)
  elif $ARGS.named.part == "commands" then
    $commands[]
    | ".SS \\fBvdiskfs " + .commandName + "\\fR\n" + (.abstract | text) + "\n" + ([visible[] | argument] | join("\n"))
  elif $ARGS.named.part == "exit" then
    $root.discussion | capture("Exit codes: (?<list>[^\n]*?)\\.\\s*$") | .list | split(", ")[]
    | capture("^(?<code>[0-9]+) (?<meaning>.*)$") | ".TP\n.B " + .code + "\n" + (.meaning | text) + "."
  else error("--arg part synopsis|commands|exit")
  end
