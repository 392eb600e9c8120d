"""The parser, which compiles a template straight into a tree of closures.

A template is parsed once when its config arrives and rendered on every tool
call, so everything that can be decided from the source is decided here:
function names and argument counts, variable scopes (each variable becomes a
slot in a per-render list, so lookups are an index), literal GJSON paths,
whether a ``range`` body can ``break``.  Rendering then only walks closures;
no tokens, no regular expressions, no name lookups.

The grammar and the scoping rules are those of ``text/template/parse``:
variables live until the ``end`` of the control structure that declares
them, ``{{else if}}``/``{{else with}}`` share the outer ``end``, a later
pipeline stage receives the previous value as its last argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from mcpgw.converter.credentials import CredentialUse, credential_name, reference_text
from mcpgw.converter.template._budget import Budget, BudgetExceeded, measure
from mcpgw.converter.template._funcs import FUNCTIONS, FuncError
from mcpgw.converter.template._gjson import GjsonPathError, compile_path
from mcpgw.converter.template._gjson import get as gjson_get
from mcpgw.converter.template._lex import Tok, lex
from mcpgw.converter.template._values import JsonDict, JsonList, print_action, sorted_keys, type_name
from mcpgw.registry.errors import TemplateError


class State:
    """What one render owns: the variable slots, the output pieces and the budget."""

    __slots__ = ("budget", "frame", "out")

    def __init__(self, frame: list[Any], out: list[str], budget: Budget) -> None:
        self.frame = frame
        self.out = out
        self.budget = budget


class ExecError(Exception):
    """A render failure at a source offset; the template turns it into a TemplateError."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_BREAK = _Break()
_CONTINUE = _Continue()

Render = Callable[[State, Any], None]
Eval = Callable[[State, Any], Any]
Cmd = Callable[[State, Any, Any], Any]


class Compiled(Protocol):
    """A compiled call: usable as an Eval, and as a Cmd when it was compiled to take the piped value."""

    def __call__(self, st: State, dot: Any, final: Any = None, /) -> Any: ...


# Python-level failures inside a function: reported without their text, which may quote a value.
_FUNCTION_FAILURES = (ValueError, TypeError, ArithmeticError, LookupError, UnicodeError)

_LONG_STRING = 4096


def _account(budget: Budget, result: Any) -> None:
    """One step for a function call, plus what its result costs (``Budget.result``)."""
    budget.steps += 1
    if budget.steps > budget.check_at:
        budget.checkpoint()
    kind = type(result)
    if (kind is str and len(result) >= _LONG_STRING) or kind is list or kind is dict:
        budget.result(result)


def _checkpoint(budget: Budget, pos: int) -> None:
    try:
        budget.checkpoint()
    except BudgetExceeded as exc:
        raise ExecError(str(exc), pos) from None


def _room(budget: Budget, size: int, pos: int) -> None:
    try:
        budget.room(size)
    except BudgetExceeded as exc:
        raise ExecError(str(exc), pos) from None


def location(source: str, name: str, pos: int) -> str:
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"template {name!r} line {line} col {column}"


def _noop(st: State, dot: Any) -> None:
    return None


def _sequence(items: list[Render]) -> Render:
    if not items:
        return _noop
    if len(items) == 1:
        return items[0]
    steps = tuple(items)

    def run(st: State, dot: Any) -> None:
        for step in steps:
            step(st, dot)

    return run


def _text(value: str, pos: int) -> Render:
    size = len(value)

    def text(st: State, dot: Any) -> None:
        st.out.append(value)
        budget = st.budget
        budget.size += size
        if budget.size > budget.max_size:
            _room(budget, budget.size, pos)

    return text


def _walk(value: Any, keys: tuple[str, ...], origin: str, pos: int) -> Any:
    """Follow a field chain the way Go does on map data.

    A missing key gives nil and the rest of the chain stays nil (Go's
    ``<no value>``); a key whose value is JSON null cannot be looked into
    (Go: "nil pointer evaluating interface {}.x").  Numeric segments index
    lists, as in Higress.
    """
    last = len(keys) - 1
    for position, key in enumerate(keys):
        if isinstance(value, dict):
            if key not in value:
                return None
            value = value[key]
            if value is None and position < last:
                chain = origin + "".join(f".{k}" for k in keys[: position + 1])
                raise ExecError(f"nil pointer evaluating {chain}.{keys[position + 1]}: {chain} is null", pos)
        elif value is None:
            return None
        elif isinstance(value, list) and key.isdigit():
            index = int(key)
            if index >= len(value):
                return None
            value = value[index]
        else:
            raise ExecError(f"can't evaluate field {key} in type {type_name(value)}", pos)
    return value


def _wrap_json(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, JsonDict):
        return JsonDict(value)
    if isinstance(value, list) and not isinstance(value, JsonList):
        return JsonList(value)
    return value


def _describe(tok: Tok) -> str:
    kind = tok.kind
    names = {
        "right": "}}",
        "eof": "the end of the template",
        "dot": "'.'",
        "nil": "nil",
        "string": "a string",
        "number": "a number",
        ":=": "':='",
        "=": "'='",
    }
    if kind in names:
        return names[kind]
    if kind == "keyword":
        return f"{{{{{tok.val}}}}}"
    if kind == "ident":
        return f"function {tok.val}"
    if kind == "field":
        return f"field .{tok.val}"
    if kind == "var":
        return f"variable {tok.val}"
    if kind == "bool":
        return "true" if tok.val else "false"
    return repr(kind)


@dataclass(slots=True)
class _Operand:
    kind: str  # func | field | var | pipe | chain | dot | nil | literal
    pos: int
    eval: Eval | None = None
    name: str = ""
    literal: Any = None
    path: str | None = None  # the data path it reads, when it reads from the root


_UNSUPPORTED_ACTIONS = {
    "define": "the {{define}} action is not supported: a json-go-template field is one template; inline it",
    "template": "the {{template}} action is not supported: a json-go-template field is one template; inline it",
    "block": "the {{block}} action is not supported: a json-go-template field is one template; inline it",
}


class Parser:
    def __init__(self, source: str, name: str, *, credentials: bool = False) -> None:
        self.source = source
        self.name = name
        self.toks = lex(source, self.fail, credentials=credentials)
        self.i = 0
        self.vars: list[tuple[str, int]] = [("$", 0)]
        self.nslots = 1
        self.loops: list[bool] = []  # per open range: whether its body uses break/continue
        self.root_dot = True  # dot is still the data root (not inside range/with)
        self.refs: set[str] = set()
        self.credential_uses: list[CredentialUse] = []

    def error(self, pos: int, reason: str) -> TemplateError:
        return TemplateError(f"{location(self.source, self.name, pos)}: {reason}")

    def fail(self, pos: int, reason: str) -> NoReturn:
        raise self.error(pos, reason)

    # -- tokens ---------------------------------------------------------------------------------

    def next(self) -> Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def peek(self) -> Tok:
        return self.toks[self.i]

    def next_non_space(self) -> Tok:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> Tok:
        saved = self.i
        tok = self.next_non_space()
        self.i = saved
        return tok

    def expect_right(self, after: str) -> None:
        tok = self.next_non_space()
        if tok.kind != "right":
            self.fail(tok.pos, f"unexpected {_describe(tok)} in {{{{{after}}}}}: expected }}}}")

    # -- lists and control structures -----------------------------------------------------------

    def parse(self) -> Render:
        body, stop = self.parse_list()
        if stop.kind != "eof":
            self.fail(stop.pos, f"unexpected {{{{{stop.val}}}}}: there is no open if, range or with")
        return _sequence(body)

    def parse_list(self) -> tuple[list[Render], Tok]:
        """Items up to ``{{end}}``, ``{{else``, or the end of input (returned as the stop token)."""
        items: list[Render] = []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return items, tok
            if tok.kind == "text":
                items.append(_text(tok.val, tok.pos))
                continue
            word = self.peek_non_space()
            if word.kind != "keyword":
                items.append(self.parse_action())
                continue
            self.next_non_space()
            keyword = word.val
            if keyword in ("end", "else"):
                return items, word
            if keyword == "if":
                items.append(self.parse_if(word))
            elif keyword == "with":
                items.append(self.parse_with(word))
            elif keyword == "range":
                items.append(self.parse_range(word))
            elif keyword in ("break", "continue"):
                items.append(self.parse_loop_control(word))
            else:
                self.fail(word.pos, _UNSUPPORTED_ACTIONS[keyword])

    def parse_action(self) -> Render:
        pos = self.peek_non_space().pos
        value, declares = self.parse_pipeline("command", "right")
        if declares:

            def assign(st: State, dot: Any) -> None:
                value(st, dot)

            return assign

        def emit(st: State, dot: Any) -> None:
            result = value(st, dot)
            if type(result) is not str:
                if isinstance(result, list | dict):
                    try:
                        measure(result, st.budget)
                    except BudgetExceeded as exc:
                        raise ExecError(str(exc), pos) from None
                result = print_action(result)
            st.out.append(result)
            budget = st.budget
            budget.size += len(result)
            if budget.size > budget.max_size:
                _room(budget, budget.size, pos)

        return emit

    def parse_body(self, *, root_dot: bool) -> tuple[Render, Tok]:
        saved_root, saved_vars = self.root_dot, len(self.vars)
        self.root_dot = root_dot
        body, stop = self.parse_list()
        self.root_dot = saved_root
        del self.vars[saved_vars:]
        return _sequence(body), stop

    def parse_else(self, context: str, opener: Tok, stop: Tok) -> Render | None:
        if stop.kind == "eof":
            self.fail(opener.pos, f"unclosed {{{{{context}}}}}: add {{{{end}}}}")
        if stop.val == "end":
            self.expect_right("end")
            return None
        chained = self.peek_non_space()
        if context in ("if", "with") and chained.kind == "keyword" and chained.val == context:
            self.next_non_space()
            return self.parse_if(chained) if context == "if" else self.parse_with(chained)
        self.expect_right("else")
        otherwise, last = self.parse_body(root_dot=self.root_dot)
        if last.kind == "eof":
            self.fail(opener.pos, f"unclosed {{{{{context}}}}}: add {{{{end}}}}")
        if last.val == "else":
            self.fail(last.pos, f"a second {{{{else}}}} in one {{{{{context}}}}}: expected {{{{end}}}}")
        self.expect_right("end")
        return otherwise

    def parse_if(self, opener: Tok) -> Render:
        scope = len(self.vars)
        condition, _ = self.parse_pipeline("if", "right")
        then, stop = self.parse_body(root_dot=self.root_dot)
        otherwise = self.parse_else("if", opener, stop)
        del self.vars[scope:]
        if otherwise is None:

            def if_(st: State, dot: Any) -> None:
                if condition(st, dot):
                    then(st, dot)

            return if_
        alternative = otherwise

        def if_else(st: State, dot: Any) -> None:
            if condition(st, dot):
                then(st, dot)
            else:
                alternative(st, dot)

        return if_else

    def parse_with(self, opener: Tok) -> Render:
        scope = len(self.vars)
        subject, _ = self.parse_pipeline("with", "right")
        body, stop = self.parse_body(root_dot=False)
        otherwise = self.parse_else("with", opener, stop)
        del self.vars[scope:]

        def with_(st: State, dot: Any) -> None:
            value = subject(st, dot)
            if value:
                body(st, value)
            elif otherwise is not None:
                otherwise(st, dot)

        return with_

    def parse_range(self, opener: Tok) -> Render:
        scope = len(self.vars)
        collection, decls, is_assign = self.pipeline_parts("range", "right")
        slots = self.declare(decls, is_assign)
        self.loops.append(False)
        body, stop = self.parse_body(root_dot=False)
        interruptible = self.loops.pop()
        otherwise = self.parse_else("range", opener, stop)
        del self.vars[scope:]
        key_slot = slots[0] if len(slots) == 2 else None
        item_slot = slots[-1] if slots else None
        pos = opener.pos

        def range_(st: State, dot: Any) -> None:
            value = collection(st, dot)
            pairs: Any
            if isinstance(value, list):
                pairs = enumerate(value) if value else None
            elif isinstance(value, dict):
                pairs = [(key, value[key]) for key in sorted_keys(value)] if value else None
            elif value is None:
                pairs = None
            elif isinstance(value, int) and not isinstance(value, bool):
                if key_slot is not None:
                    raise ExecError("can't use an integer to iterate over more than one variable", pos)
                pairs = ((i, i) for i in range(value)) if value > 0 else None
            else:
                raise ExecError(f"range can't iterate over a value of type {type_name(value)}", pos)
            if pairs is None:
                if otherwise is not None:
                    otherwise(st, dot)
                return
            frame = st.frame
            budget = st.budget
            for key, item in pairs:
                budget.steps += 1
                if budget.steps > budget.check_at:
                    _checkpoint(budget, pos)
                if item_slot is not None:
                    frame[item_slot] = item
                if key_slot is not None:
                    frame[key_slot] = key
                if not interruptible:
                    body(st, item)
                    continue
                try:
                    body(st, item)
                except _Continue:
                    continue
                except _Break:
                    break

        return range_

    def parse_loop_control(self, word: Tok) -> Render:
        if not self.loops:
            self.fail(word.pos, f"{{{{{word.val}}}}} outside {{{{range}}}}")
        self.loops[-1] = True
        self.expect_right(word.val)
        signal = _BREAK if word.val == "break" else _CONTINUE

        def interrupt(st: State, dot: Any) -> None:
            raise signal

        return interrupt

    # -- variables ------------------------------------------------------------------------------

    def lookup(self, tok: Tok) -> int:
        for name, slot in reversed(self.vars):
            if name == tok.val:
                return slot
        raise self.error(tok.pos, f"undefined variable {tok.val}: declare it first with {tok.val} := ...")

    def declare(self, decls: list[Tok], is_assign: bool) -> list[int]:
        if is_assign:
            return [self.lookup(tok) for tok in decls]
        slots = []
        for tok in decls:
            if tok.val == "$":
                self.fail(tok.pos, "$ cannot be declared: it is always the data root")
            slots.append(self.nslots)
            self.vars.append((tok.val, self.nslots))
            self.nslots += 1
        return slots

    # -- pipelines and commands -----------------------------------------------------------------

    def parse_pipeline(self, context: str, end: str) -> tuple[Eval, bool]:
        """A pipeline with its declaration applied; says whether it declared or assigned."""
        value, decls, is_assign = self.pipeline_parts(context, end)
        if not decls:
            return value, False
        slot = self.declare(decls, is_assign)[0]

        def store(st: State, dot: Any) -> Any:
            result = value(st, dot)
            st.frame[slot] = result
            return result

        return store, True

    def pipeline_parts(self, context: str, end: str) -> tuple[Eval, list[Tok], bool]:
        decls, is_assign = self.declarations(context)
        first: Eval | None = None
        stages: list[Cmd] = []
        while True:
            tok = self.peek_non_space()
            if tok.kind == end:
                self.next_non_space()
                break
            if first is not None:
                if tok.kind != "|":
                    self.fail(tok.pos, f"unexpected {_describe(tok)} in {context}")
                self.next_non_space()
                after = self.peek_non_space()
                if after.kind in (end, "|"):
                    self.fail(after.pos, f"missing command after '|' in {context}")
                stages.append(self.parse_stage(context, end, len(stages) + 2))
            else:
                first = self.parse_first(context, end)
        if first is None:
            self.fail(self.toks[self.i - 1].pos, f"missing value for {context}")
        return _chain(first, stages), decls, is_assign

    def declarations(self, context: str) -> tuple[list[Tok], bool]:
        saved = self.i
        tok = self.next_non_space()
        if tok.kind == "var":
            after = self.peek_non_space()
            if after.kind in (":=", "="):
                self.next_non_space()
                return [tok], after.kind == "="
            if after.kind == ",":
                if context != "range":
                    self.fail(after.pos, f"too many declarations in {context}")
                self.next_non_space()
                second = self.next_non_space()
                if second.kind != "var":
                    self.fail(second.pos, "range can only initialize variables")
                operator = self.next_non_space()
                if operator.kind not in (":=", "="):
                    self.fail(operator.pos, "expected := or = after the range variables")
                return [tok, second], operator.kind == "="
        self.i = saved
        return [], False

    def operands(self, context: str, end: str) -> list[_Operand]:
        found: list[_Operand] = []
        while True:
            tok = self.peek_non_space()
            if tok.kind in (end, "|"):
                return found
            if tok.kind in ("right", ")", "eof"):
                if end == ")":
                    self.fail(tok.pos, "unclosed left parenthesis: add the matching )")
                self.fail(tok.pos, f"unexpected {_describe(tok)} in {context}")
            found.append(self.operand(context))
            following = self.peek()
            if following.kind not in ("space", end, "|", "right", ")", "eof"):
                self.fail(following.pos, f"unexpected {_describe(following)} in operand: separate arguments by spaces")

    def parse_first(self, context: str, end: str) -> Eval:
        ops = self.operands(context, end)
        head, args = ops[0], ops[1:]
        if head.kind == "func":
            return self.call(head, args, takes_final=False)
        if head.kind == "nil":
            self.fail(head.pos, "nil is not a command")
        if args and head.kind in ("literal", "dot"):
            self.fail(args[0].pos, "a constant is not a function: it cannot take arguments")
        if args:
            self.fail(head.pos, "method calls are not supported: a field or variable cannot take arguments")
        assert head.eval is not None
        return head.eval

    def parse_stage(self, context: str, end: str, stage: int) -> Cmd:
        ops = self.operands(context, end)
        head, args = ops[0], ops[1:]
        if head.kind in ("literal", "dot", "nil"):
            self.fail(head.pos, f"non executable command in pipeline stage {stage}: a constant cannot be piped into")
        if head.kind != "func":
            self.fail(head.pos, "method calls are not supported: a field or variable cannot be piped into")
        return self.call(head, args, takes_final=True)

    def operand(self, context: str) -> _Operand:
        tok = self.next_non_space()
        kind, pos = tok.kind, tok.pos
        op: _Operand
        if kind == "ident":
            if tok.val not in FUNCTIONS:
                self.fail(pos, self.unknown_function(tok.val))
            op = _Operand("func", pos, name=tok.val)
        elif kind == "dot":
            op = _Operand("dot", pos, eval=_dot)
        elif kind == "nil":
            op = _Operand("nil", pos, eval=_nil)
        elif kind in ("bool", "number", "string"):
            op = _Operand("literal", pos, eval=_constant(tok.val), literal=tok.val)
        elif kind == "var":
            root_path = "" if tok.val == "$" else None
            op = _Operand("var", pos, eval=_variable(self.lookup(tok)), name=tok.val, path=root_path)
        elif kind == "field":
            return self.field_chain(_Operand("field", pos), [tok.val])
        elif kind == "credential":
            return self.credential(tok)
        elif kind == "(":
            inner, _ = self.parse_pipeline("parenthesized pipeline", ")")
            op = _Operand("pipe", pos, eval=inner, name="(...)")
        else:
            self.fail(pos, f"unexpected {_describe(tok)} in {context}")
        if self.peek().kind != "field":
            return op
        if op.kind in ("dot", "nil", "literal"):
            self.fail(self.peek().pos, f"unexpected . after {_describe(tok)}")
        if op.kind == "func":
            op = _Operand("pipe", pos, eval=self.argument(op), name=f"({op.name})")
        return self.field_chain(op, [])

    def credential(self, tok: Tok) -> _Operand:
        """``${nacos.<dataId>/<group>}``: ``$.config.credentials["<group>_<dataId>"]``, then any fields."""
        data_id, group = tok.val
        name = credential_name(data_id, group)
        label = reference_text(data_id, group)
        keys: list[str] = []
        while self.peek().kind == "field":
            keys.append(self.next().val)
        self.credential_uses.append(CredentialUse(data_id, group, tuple(keys), tok.pos))
        self.refs.add(".".join(("config", "credentials", name, *keys)))
        return _Operand("chain", tok.pos, eval=_credential(name, label, tuple(keys), tok.pos), name=label)

    def field_chain(self, op: _Operand, keys: list[str]) -> _Operand:
        while self.peek().kind == "field":
            keys.append(self.next().val)
        chain = tuple(keys)
        if op.kind == "field":
            op.path = ".".join(chain) if self.root_dot else None
        elif op.path is not None:
            op.path = ".".join(chain)
        if op.path:
            self.refs.add(op.path)
        op.eval = _field_walker(op.eval, chain, "" if op.kind == "field" else op.name, op.pos)
        if op.kind != "field":
            op.kind = "chain"
        return op

    def unknown_function(self, name: str) -> str:
        if name == "call":
            return "the call builtin is not supported: data holds no functions"
        close = difflib.get_close_matches(name, list(FUNCTIONS), n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        return f'unknown function "{name}"{hint} (SUPPORTED_FUNCTIONS lists what templates may call)'

    def check_arity(self, head: _Operand, count: int) -> None:
        spec = FUNCTIONS[head.name]
        if spec.min_args <= count and (spec.max_args is None or count <= spec.max_args):
            return
        if spec.max_args is None:
            want = f"at least {spec.min_args}"
        elif spec.min_args == spec.max_args:
            want = str(spec.min_args)
        else:
            want = f"{spec.min_args} to {spec.max_args}"
        self.fail(head.pos, f"wrong number of arguments for {head.name}: want {want}, got {count}")

    def argument(self, op: _Operand) -> Eval:
        if op.kind == "func":
            self.check_arity(op, 0)
            return self.call(op, [], takes_final=False)
        assert op.eval is not None
        return op.eval

    def call(self, head: _Operand, args: list[_Operand], *, takes_final: bool) -> Compiled:
        """A function call: an Eval ``(st, dot)``, or a Cmd ``(st, dot, final)`` when piped into."""
        name, pos = head.name, head.pos
        self.check_arity(head, len(args) + takes_final)
        if name == "gjson":
            return self.gjson_call(args, pos, takes_final=takes_final)
        evals = tuple(self.argument(arg) for arg in args)
        if name == "index" and args and args[0].path is not None:
            keys = [arg.literal for arg in args[1:]]
            if all(isinstance(key, str) for key in keys):
                self.refs.add(".".join([args[0].path, *keys]).strip("."))
        if name in ("and", "or"):
            return _and_or(name == "and", evals, takes_final)
        func = FUNCTIONS[name]
        impl = func.impl
        assert impl is not None

        def failed(exc: Exception) -> ExecError:
            if isinstance(exc, FuncError | BudgetExceeded):
                return ExecError(f"error calling {name}: {exc}", pos)
            return ExecError(f"error calling {name}: invalid argument ({type(exc).__name__})", pos)

        if func.budgeted:
            # The function sizes its result before building it: it gets the budget first.
            def budgeted(st: State, dot: Any, final: Any = None) -> Any:
                try:
                    values = [evaluate(st, dot) for evaluate in evals]
                    if takes_final:
                        values.append(final)
                    result = impl(st.budget, *values)
                    _account(st.budget, result)
                except (FuncError, BudgetExceeded, *_FUNCTION_FAILURES) as exc:
                    raise failed(exc) from None
                return result

            return budgeted

        if takes_final:

            def piped(st: State, dot: Any, final: Any = None) -> Any:
                try:
                    result = impl(*[evaluate(st, dot) for evaluate in evals], final)
                    _account(st.budget, result)
                except (FuncError, BudgetExceeded, *_FUNCTION_FAILURES) as exc:
                    raise failed(exc) from None
                return result

            return piped

        if not evals:

            def bare(st: State, dot: Any, final: Any = None) -> Any:
                try:
                    result = impl()
                    _account(st.budget, result)
                except (FuncError, BudgetExceeded, *_FUNCTION_FAILURES) as exc:
                    raise failed(exc) from None
                return result

            return bare

        def direct(st: State, dot: Any, final: Any = None) -> Any:
            try:
                result = impl(*[evaluate(st, dot) for evaluate in evals])
                _account(st.budget, result)
            except (FuncError, BudgetExceeded, *_FUNCTION_FAILURES) as exc:
                raise failed(exc) from None
            return result

        return direct

    def gjson_call(self, args: list[_Operand], pos: int, *, takes_final: bool) -> Compiled:
        literal = args[0].literal if args and args[0].kind == "literal" else None
        if isinstance(literal, str):
            try:
                steps = compile_path(literal)
            except GjsonPathError as exc:
                self.fail(args[0].pos, f"bad gjson path: {exc}")
            if self.root_dot and all(step.kind == "key" for step in steps):
                self.refs.add(".".join(step.key for step in steps))

            def fixed(st: State, dot: Any, final: Any = None) -> Any:
                return _wrap_json(gjson_get(dot, steps))

            return fixed
        evaluate = None if takes_final else self.argument(args[0])

        def dynamic(st: State, dot: Any, final: Any = None) -> Any:
            path = final if evaluate is None else evaluate(st, dot)
            if not isinstance(path, str):
                raise ExecError(f"error calling gjson: the path must be a string, got {type_name(path)}", pos)
            try:
                steps = compile_path(path)
            except GjsonPathError as exc:
                raise ExecError(f"error calling gjson: {exc}", pos) from None
            return _wrap_json(gjson_get(dot, steps))

        return dynamic


def _dot(st: State, dot: Any) -> Any:
    return dot


def _nil(st: State, dot: Any) -> Any:
    return None


def _constant(value: Any) -> Eval:
    def constant(st: State, dot: Any) -> Any:
        return value

    return constant


def _variable(slot: int) -> Eval:
    def variable(st: State, dot: Any) -> Any:
        return st.frame[slot]

    return variable


def _credential(name: str, label: str, keys: tuple[str, ...], pos: int) -> Eval:
    """A reference's value, looked up from the root so that it means the same inside range and with."""

    def credential(st: State, dot: Any) -> Any:
        root = st.frame[0]
        config = root.get("config") if isinstance(root, dict) else None
        found = config.get("credentials") if isinstance(config, dict) else None
        if not isinstance(found, dict) or name not in found:
            raise ExecError(f"the config {label} refers to is not loaded", pos)
        return _walk(found[name], keys, label, pos) if keys else found[name]

    return credential


def _field_walker(start: Eval | None, keys: tuple[str, ...], origin: str, pos: int) -> Eval:
    if start is None and len(keys) == 1:
        key = keys[0]

        def field(st: State, dot: Any) -> Any:
            if type(dot) is dict:
                return dot.get(key)
            return _walk(dot, keys, origin, pos)

        return field
    if start is None:

        def fields(st: State, dot: Any) -> Any:
            return _walk(dot, keys, origin, pos)

        return fields
    begin = start

    def chain(st: State, dot: Any) -> Any:
        return _walk(begin(st, dot), keys, origin, pos)

    return chain


def _chain(first: Eval, stages: list[Cmd]) -> Eval:
    if not stages:
        return first
    rest = tuple(stages)

    def pipeline(st: State, dot: Any) -> Any:
        value = first(st, dot)
        for stage in rest:
            value = stage(st, dot, value)
        return value

    return pipeline


def _and_or(is_and: bool, evals: tuple[Eval, ...], takes_final: bool) -> Compiled:
    """Go 1.18+: stop at the first argument that decides, and return that argument itself."""
    if takes_final:

        def piped(st: State, dot: Any, final: Any = None) -> Any:
            for evaluate in evals:
                value = evaluate(st, dot)
                if bool(value) != is_and:
                    return value
            return final

        return piped

    def direct(st: State, dot: Any, final: Any = None) -> Any:
        value = None
        for evaluate in evals:
            value = evaluate(st, dot)
            if bool(value) != is_and:
                return value
        return value

    return direct
