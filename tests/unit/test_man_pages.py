"""The man pages (man/*.scd) cannot drift from the programs.

For every command of pos-relay, pos-p2p and pos-loadtest (read from the
program's own --help, so a new subcommand is checked too) and for
pos-discovery, every option that `--help` prints must be described in the
man page's section of that command, and every option the section describes
must appear in `--help`. Every long option a program's getopt tables accept
must appear in its --help. Every configuration key pos-relay and
pos-discovery accept must be named in their pages. libpos-p2p(3) must name every function the public
header declares and the shared library exports, and nothing else. When scdoc
was found at build time, the generated pages must render without groff
warnings.
"""
import os
import re
import subprocess

from harness import BUILD, SOURCE, Skip, binary, run, test

MAN = os.path.join(SOURCE, "man")

# program, man page source, folders of its option tables, whether it has subcommands
PROGRAMS = [
    ("relay/pos-relay", "pos-relay.8.scd", ["relay"], True),
    ("client-lib/cli/pos-p2p", "pos-p2p.1.scd", ["client-lib/cli"], True),
    ("loadtest/pos-loadtest", "pos-loadtest.1.scd", ["loadtest"], True),
    ("discovery-api/pos-discovery", "pos-discovery.8.scd", ["discovery-api"], False),
]
NOT_INSTALLED = {"fwdbench.c", "kabench.c"}  # pos-fwdbench, pos-kabench: benchmark helpers, no man page

OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)(?![\w])")
TERM = re.compile(r"\*--([^*\s]+)\*")  # a bold option in scdoc: *--name*
TABLE_ENTRY = re.compile(r'\{\s*"([a-z][a-z0-9-]*)"\s*,\s*(?:no|required|optional)_argument')


def help_text(argv):
    p = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, f"{' '.join(argv)} --help exited {p.returncode}: {p.stderr}"
    return p.stdout


def options_in(text):
    return set(OPTION.findall(text)) - {"help"}


def subcommands(prog):
    """The command names listed under 'commands:' in PROG --help."""
    names, inside = [], False
    for line in help_text([prog]).splitlines():
        if line.strip() == "commands:":
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            names.append(line.split()[0])
    assert names, f"{prog} --help lists no commands"
    return names


def sections(page, level):
    """{heading's first word: body} for the headings of LEVEL ('#' or '##') in PAGE."""
    out, name, body, code = {}, None, [], False
    for line in page.splitlines():
        code ^= line.startswith("```")  # a shell comment in an example is no heading
        m = None if code else re.match(r"^(#+) (.*)$", line)
        if m and len(m.group(1)) <= len(level):
            if name is not None:
                out[name] = "\n".join(body)
            name = m.group(2).split()[0] if len(m.group(1)) == len(level) else None
            body = []
        elif name is not None:
            body.append(line)
    if name is not None:
        out[name] = "\n".join(body)
    return out


def described(section):
    """Options a man page section describes: terms of its definition lines ('*--opt* ...')."""
    opts = set()
    for line in section.splitlines():
        if line.startswith("*--"):
            opts |= set(TERM.findall(line)) - {"help"}
    return opts


def compare(who, helptext, page_name, heading, section, problems):
    in_help = options_in(helptext)
    in_page = described(section)
    for o in sorted(in_help - in_page):
        problems.append(f"{who}: option --{o} is in --help but not described in "
                        f"man/{page_name} under '{heading}'")
    for o in sorted(in_page - in_help):
        problems.append(f"{who}: man/{page_name} describes --{o} under '{heading}', "
                        f"but '{who} --help' does not mention it")


@test
def every_option_of_help_is_in_the_man_page_and_back():
    problems, checked = [], 0
    for rel, page_name, _, has_commands in PROGRAMS:
        prog = binary(rel)
        name = os.path.basename(rel)
        page = open(os.path.join(MAN, page_name)).read()
        if not has_commands:
            opts = sections(page, "#").get("OPTIONS")
            assert opts is not None, f"man/{page_name} has no '# OPTIONS' section"
            compare(name, help_text([prog]), page_name, "# OPTIONS", opts, problems)
            checked += 1
            continue
        cmds = sections(sections(page, "#").get("COMMANDS", ""), "##")
        listed = subcommands(prog)
        for cmd in listed:
            who = f"{name} {cmd}"
            if cmd not in cmds:
                problems.append(f"{who}: command has no '## {cmd}' section under "
                                f"'# COMMANDS' in man/{page_name}")
                continue
            compare(who, help_text([prog, cmd]), page_name, f"## {cmd}", cmds[cmd], problems)
            checked += 1
        for cmd in sorted(set(cmds) - set(listed)):
            problems.append(f"man/{page_name} has a section '## {cmd}', but '{name} --help' "
                            f"lists no such command")
    assert not problems, "man pages and --help differ:\n  " + "\n  ".join(problems)
    assert checked >= 15, f"only {checked} commands checked"
    print(f"  {checked} commands: options of --help and man pages agree")


@test
def every_accepted_long_option_is_in_help():
    """An option the getopt tables accept but --help never mentions is in no man page either."""
    problems = []
    for rel, _, dirs, has_commands in PROGRAMS:
        prog = binary(rel)
        name = os.path.basename(rel)
        helps = help_text([prog])
        if has_commands:
            helps += "".join(help_text([prog, c]) for c in subcommands(prog))
        accepted = set()
        for d in dirs:
            for f in sorted(os.listdir(os.path.join(SOURCE, d))):
                if f.endswith((".c", ".h")) and f not in NOT_INSTALLED:
                    accepted |= set(TABLE_ENTRY.findall(open(os.path.join(SOURCE, d, f)).read()))
        assert accepted, f"no option tables found for {name} in {dirs}"
        for o in sorted(accepted - options_in(helps) - {"help"}):
            problems.append(f"{name}: accepts --{o} but no --help of it mentions it")
    assert not problems, "\n  ".join(["options missing from --help:"] + problems)


# configuration keys: (source, the array that lists them, man page, section that must name each)
CONFIG_KEYS = [
    ("relay/relay_config.c", r"known_keys\[\]", "pos-relay.8.scd", "CONFIGURATION"),
    ("discovery-api/options.c", r"keys\[SET_COUNT \+ 1\]", "pos-discovery.8.scd", "OPTIONS"),
]


@test
def every_configuration_key_is_in_the_man_page():
    problems, n = [], 0
    for src, array, page_name, section in CONFIG_KEYS:
        text = open(os.path.join(SOURCE, src)).read()
        m = re.search(array + r"\s*=\s*\{(.*?)\};", text, re.S)
        assert m, f"{src}: the list of configuration keys ({array}) is gone: update this test"
        keys = re.findall(r'"([a-z0-9_]+)"', m.group(1))
        assert len(keys) >= 8, f"{src}: only {keys}"
        body = sections(open(os.path.join(MAN, page_name)).read(), "#").get(section, "")
        bold = set(re.findall(r"\*([a-z0-9_]+)\*", body))
        n += len(keys)
        problems += [f"{src} accepts the configuration key {k!r}, but man/{page_name} does not "
                     f"name it (as *{k}*) under '# {section}'" for k in keys if k not in bold]
    assert not problems, "\n  ".join(["configuration keys missing from man pages:"] + problems)
    print(f"  {n} configuration keys named in the man pages")


HEADERS = ("client-lib/include/pos/p2p.h", "client-lib/include/pos/mdns.h")


def header_functions():
    """The functions the installed headers (pos/p2p.h, pos/mdns.h) declare."""
    text = "".join(open(os.path.join(SOURCE, h)).read() for h in HEADERS)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments name functions too
    return set(re.findall(r"\b((?:pos_p2p|pos_mdns)_[a-z0-9_]+)\s*\(", text)) - {
        n for n in re.findall(r"\(\s*\*\s*((?:pos_p2p|pos_mdns)_[a-z0-9_]+)\s*\)", text)}


def exported_functions():
    lib = os.path.join(BUILD, "client-lib", "libpos-p2p.so")
    p = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    assert p.returncode == 0, f"nm {lib}: {p.stderr}"
    return {l.split()[-1].split("@")[0] for l in p.stdout.splitlines() if " T " in l}


@test
def library_page_names_every_function():
    page = open(os.path.join(MAN, "libpos-p2p.3.scd")).read()
    named = set(re.findall(r"\b((?:pos_p2p|pos_mdns)_[a-z0-9_]+)\*?\(", page.replace("\\_", "_")))
    declared = header_functions()
    exported = exported_functions()
    assert len(declared) > 40, f"only {len(declared)} functions found in pos/p2p.h and pos/mdns.h"
    problems = [f"pos/p2p.h or pos/mdns.h declares {f}() but man/libpos-p2p.3.scd does not name it"
                for f in sorted(declared - named)]
    problems += [f"libpos-p2p.so exports {f}() but man/libpos-p2p.3.scd does not name it"
                 for f in sorted(exported - named)]
    problems += [f"man/libpos-p2p.3.scd names {f}(), which no installed header declares"
                 for f in sorted(named - declared)]
    assert not problems, "\n  ".join(["libpos-p2p(3) is out of date:"] + problems)
    print(f"  {len(declared)} functions declared, all named in libpos-p2p(3)")


@test
def generated_pages_render():
    built = os.path.join(BUILD, "man")
    pages = ["pos-relay.8", "pos-discovery.8", "pos-p2p.1", "pos-loadtest.1", "libpos-p2p.3"]
    if not all(os.path.exists(os.path.join(built, p)) for p in pages):
        raise Skip("scdoc was not found when the build was configured: no pages generated")
    for p in pages:
        path = os.path.join(built, p)
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path], capture_output=True,
                           text=True)
        assert r.returncode == 0 and not r.stderr.strip(), f"groff on {p}: {r.stderr}"
        head = open(path).read(4096)
        name, sect = p.rsplit(".", 1)
        assert re.search(rf'^\.TH "{re.escape(name)}" "{sect}"', head, re.M), f"{p}: no .TH line"


if __name__ == "__main__":
    run("man-pages")
