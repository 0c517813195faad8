"""Answer-equivalence cases for the math verifier (issue #15): data only, no test logic.

Each `MathCase` pairs a reference (`gold`) with a model's FULL output text (`prediction`), the
way math-verify's authors use the library: `verify(parse(gold), parse(prediction))`, where
math-verify's own extraction (LaTeX environments, `\\boxed{}`, "answer" anchors, plain numbers)
pulls the answer out of the output.

`expected` is the verdict a careful human grader gives (is the model's final answer
mathematically the reference?), NOT what math-verify returns. Where math-verify 0.9.0 with
default settings disagrees, the case's index is in `MATH_VERIFY_WRONG` with the reason; those are
the places where the project's verifier may deliberately differ from math-verify.

Reference conventions: GSM8K-style references are plain numbers ("18"); MATH-style references
are LaTeX inside `$...$` (math-verify only extracts LaTeX from a math environment, so a raw
`\\frac{\\pi}{2}` or `\\text{Evelyn}` reference parses to nothing and nothing verifies against it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MathCase:
    """One reference / full model output pair and the right verdict."""

    gold: str
    prediction: str
    expected: bool
    kind: str
    note: str = ""


CASES: list[MathCase] = []
# index into CASES -> why math-verify (defaults) returns the opposite of `expected`
MATH_VERIFY_WRONG: dict[int, str] = {}


def _add(gold: str, prediction: str, expected: bool, kind: str, note: str = "", *,
         mv_wrong: str | None = None) -> None:
    """Append a case; `mv_wrong` (the reason) records that math-verify gets this one wrong."""
    if mv_wrong is not None:
        MATH_VERIFY_WRONG[len(CASES)] = mv_wrong
    CASES.append(MathCase(gold, prediction, expected, kind, note))


_EGGS = (
    "Janet's ducks lay 16 eggs per day.\n"
    "She eats 3 for breakfast and bakes muffins with 4, so 16 - 3 - 4 = 9 eggs are left.\n"
    "She sells each egg for $2, so she makes 9 * 2 = 18 dollars every day.\n"
)

# ---------------------------------------------------------------- gsm8k: "#### x" endings

_add("18", _EGGS + "#### 18", True, "gsm8k")
_add("18", _EGGS + "#### 18<|endoftext|>", True, "gsm8k", "end-of-text token after the answer")
_add("18", _EGGS + "#### 18</s>", True, "gsm8k")
_add("18", _EGGS + "#### $18", True, "gsm8k", "currency sign after ####")
_add("18", _EGGS + "#### 18 dollars", True, "gsm8k")
_add("18", _EGGS + "#### 18.00", True, "gsm8k")
_add("1080", "Each row has 36 tiles and there are 30 rows.\n36 * 30 = 1080 tiles.\n#### 1,080",
     True, "gsm8k", "thousands comma after ####")
_add("-4", "The temperature falls 2 degrees per hour for 5 hours from 6 degrees.\n"
     "6 - 2 * 5 = -4\n#### -4", True, "gsm8k")
_add("0.5", "She splits 1 pizza between 2 friends: 1 / 2 = 0.5 pizza each.\n#### 0.5", True,
     "gsm8k")
_add("18", _EGGS + "#### 17", False, "gsm8k", "off by one after ####")
_add("81", _EGGS + "#### 18", False, "gsm8k", "digits swapped")
_add("18", _EGGS + "#### 18\n\nQuestion: Tom has 3 apples and buys 5 more. How many apples does "
     "he have?\nAnswer: Tom has 3 + 5 = 8 apples.\n#### 8", True, "gsm8k",
     "a base model keeps writing the next few-shot question; the answer to THIS one is 18",
     mv_wrong="no cut at the hallucinated next 'Question:': the last '#### 8' (and its 'Answer:') "
     "is extracted")
_add("18", _EGGS + "#### 18\n\nLet me know if you need help with the other 2 problems!", True,
     "gsm8k", "chatty tail after the answer line",
     mv_wrong="'####' is not an anchor: the rightmost plain number ('2' in the tail) is extracted")

# ---------------------------------------------------------------- boxed: MATH-style \boxed{}

_add("18", _EGGS + "Therefore she makes $\\boxed{18}$ dollars.", True, "boxed")
_add("18", "Step 1: 16 - 3 = 13\nStep 2: 13 - 4 = 9\nStep 3: 9 \\times 2 = 18\n\n\\boxed{18}",
     True, "boxed")
_add("18", "\\boxed{18}\n\nNote: she sells 9 eggs at 2 dollars each.", True, "boxed",
     "numbers after the box are ignored: the box outranks plain numbers")
_add("18", "Thus the answer is \\boxed{18}. Wait, is 9 * 2 = 20? No, it is 18.", True, "boxed")
_add("18", "\\[ 9 \\times 2 = \\boxed{18} \\]", True, "boxed")
_add("18", "\\boxed{\\boxed{18}}", True, "boxed", "nested box")
_add("18", "The final answer is $\\boxed{18}$. I hope it is correct.", True, "boxed")
_add("18", "**Final Answer**\n\\[\n\\boxed{18}\n\\]", True, "boxed")
_add("18", "<think>\nMaybe 20? No: 16 - 3 - 4 = 9 and 9 * 2 = 18.\n</think>\n\n\\boxed{18}", True,
     "boxed", "reasoning-model output with a think block")
_add("$14{,}916$", "$N$ must be divisible by 4 and by 3; $14{,}912$ is not a multiple of 3 "
     "but $14{,}916$ is.\nTherefore $\\boxed{14{,}916}$ is our answer.", True, "boxed")
_add("18", "<think>\nFirst guess: \\boxed{20}. Recheck: 16 - 3 - 4 = 9 and 9 * 2 = 18.\n"
     "</think>\n\nThe answer is 18.", True, "boxed",
     "the final answer after the think block is 18; the box inside the think block was a guess",
     mv_wrong="a \\boxed{} (priority 50) outranks the 'answer' anchor (priority 200) wherever it "
     "is, even inside <think>")

# ---------------------------------------------------------------- prose: "The answer is ..."

_add("18", "The answer is 18.", True, "prose")
_add("18", "The final answer is 18. I hope it is correct.", True, "prose")
_add("18", "It is not 16 or 20; the answer is 18.", True, "prose")
_add("18", "The answer is 18, not 16 or 20.", True, "prose")
_add("18", "The answer is 16 + 2 = 18.", True, "prose")
_add("18", "In order to answer, we compute 16 - 3 - 4 = 9 and 9 * 2 = 18.\n"
     "She makes 18 dollars every day.", True, "prose")
_add("18", "I think the answer is 20, because 16 + 4 = 20.", False, "prose", "wrong final answer")
_add("18", "The answer is 18. Check: 9 * 2 = 18, and 16 - 7 = 9.", True, "prose",
     "a verification line follows the answer",
     mv_wrong="the 'answer' regex jumps to the LAST '=' within 100 characters after 'answer' and "
     "extracts 9")
_add("18", "To answer this, note she has 16 eggs. She eats 3 and bakes with 4, leaving 9.\n"
     "At $2 each, she makes 18 dollars.", True, "prose",
     "'answer' used as a verb at the start",
     mv_wrong="the word 'answer' anchors the first number within 50 characters after it (16)")
_add("18", "She makes 18 dollars every day from 9 eggs.", True, "prose",
     "prose distractor after the answer",
     mv_wrong="without an anchor the rightmost number (9) is extracted")
_add("18", "The answer is eighteen.", True, "prose", "number written as a word",
     mv_wrong="number words are not extracted: parse returns []")
_add("12", "Tom had 3 bags with 4 apples each, so he has 3 * 4 = 12 apples.", True, "prose")

# ---------------------------------------------------------------- answer-tag / markdown

_add("18", "So she makes 18 dollars a day.\nAnswer: 18", True, "answer-tag")
_add("18", "**Answer:** 18", True, "answer-tag")
_add("42", "Adding the two parts, 40 + 2 gives\n\n**42**", True, "answer-tag", "bold markdown")
_add("18", "Final answer: **18**", True, "answer-tag")
_add("18", "# Answer\n\n18", True, "answer-tag")
_add("18", "Answer: 18 dollars per day, since she sells 9 eggs at $2 each.", True, "answer-tag",
     "numbers after 'Answer: 18' are ignored")
_add("18", "The answer is: $18$", True, "answer-tag")
_add("18", "Answer:\n\n18", True, "answer-tag")
_add("18", "Answer: 20", False, "answer-tag")

# ---------------------------------------------------------------- latex-env: $, $$, \[, \(

_add("$9$", "Answer $ 9 $", True, "latex-env")
_add("$9$", "Answer $$ 9 $$", True, "latex-env")
_add("$9$", "Answer \\( 9 \\)", True, "latex-env")
_add("$9$", "Answer \\[ 9 \\]", True, "latex-env")
_add("$9$", "Answer $$\n9\n$$", True, "latex-env", "display math over several lines")
_add("$10$", "Answer \\( (9+1) \\)", True, "latex-env", "evaluated expression")
_add("18", "$16 - 3 - 4 = 9$ eggs, so she makes $9 \\cdot 2 = 18$ dollars.", True, "latex-env",
     "last equation's right side")
_add("$\\frac{1}{3}$", "Solving $3k = 1$ we get $k = \\frac{1}{3}$.", True, "latex-env")
_add("$9$", "Answer $$ 8 $$", False, "latex-env")

# ---------------------------------------------------------------- units

_add("18", "She makes 18 dollars.", True, "units")
_add("18", "She makes $\\boxed{18 \\text{ dollars}}$.", True, "units")
_add("18", "She makes $\\boxed{18\\text{ dollars per day}}$.", True, "units")
_add("$18 \\text{ dollars}$", "She makes $\\boxed{18}$.", True, "units", "unit in the reference")
_add("5", "The train travels $\\boxed{5 \\text{ km}}$.", True, "units")
_add("5", "The train travels $\\boxed{5\\,\\mathrm{km}}$.", True, "units")
_add("5", "It travels at $\\boxed{5 \\text{ km/h}}$.", True, "units")
_add("5", "The train takes 5 hours.", True, "units")
_add("18", "Answer: 18\u00a0dollars", True, "units", "no-break space before the unit")
_add("$6\\pi$", "The area is $\\boxed{6 \\pi \\text{ cm}^2}$.", True, "units")
_add("5", "He pays with a $50 bill, so his change is 50 - 45 = 5 dollars.\nThe answer is "
     "$\\boxed{5 dollars}$.", True, "units", "unit word inside the box without \\text{}",
     mv_wrong="bare words in LaTeX parse as a product of one-letter symbols (5*a*d*l*l*o*r*s); "
     "'dollars' is not in latex2sympy2's unit list")
_add("1.5", "The distance is $\\boxed{1500 \\text{ m}}$.", False, "units",
     "reference in km, answer in m: the number is wrong")
_add("90", "It takes $\\boxed{1.5 \\text{ hours}}$.", False, "units",
     "question asks for minutes: 1.5 is the wrong number")

# ---------------------------------------------------------------- currency

_add("18", "She makes $18 every day.", True, "currency")
_add("18", "The total cost is $18.00.", True, "currency")
_add("18", "So she earns $\\$18$ per day.", True, "currency")
_add("18", "She makes $\\boxed{\\$18}$.", True, "currency")
_add("18", "It costs 18$.", True, "currency", "currency sign after the number")
_add("18", "Answer: \u20ac18", True, "currency")
_add("18", "Answer: 18 \u20ac", True, "currency")
_add("18", "Total: 18 USD", True, "currency")
_add("1500", "The answer is \\boxed{\\$1,500}.", True, "currency")
_add("18", "She makes $\\$20$ per day.", False, "currency")
_add("18", "The total is \\$18.", True, "currency", "markdown-escaped dollar sign in prose",
     mv_wrong="'\\$18' outside math: the backslash blocks the number regex's prefix (space, '=' "
     "or start) and an unpaired '\\$' opens no LaTeX environment: parse returns []")
_add("24200", "He earns $2,800 a month and spends $600 of it.\nHe saves 2800 - 600 = 2200 "
     "dollars a month.\nOver 11 months that is 2200 * 11 = 24200 dollars.\n#### 24200", True,
     "currency", "two dollar amounts on one line read as an inline math span; harmless here")
_add("24200", "Let's work out the answer carefully.\nHe earns $2,800 a month and spends $600 of "
     "it.\nHe saves 2800 - 600 = 2200 dollars a month.\nOver 11 months that is 2200 * 11 = "
     "24200 dollars.\n#### 24200", True, "currency",
     "the word 'answer' in the opening line, then two dollar amounts",
     mv_wrong="'$2,800 a month and spends $' is taken as inline LaTeX, and the LaTeX 'answer' "
     "anchor (priority 200, DOTALL: it crosses the newline) outranks the plain '#### 24200' "
     "(priority 300)")
_add("18", "She makes $\\boxed{\\text{\\$}18}$.", True, "currency",
     mv_wrong="'\\text{\\$}' becomes an empty \\text{} and the box parses to a product with "
     "an empty symbol")

# ---------------------------------------------------------------- thousands separators

_add("1234567", "#### 1,234,567", True, "thousands")
_add("1234567", "#### 1 234 567", True, "thousands", "space-grouped digits")
_add("1000", "The answer is 1 000.", True, "thousands")
_add("1000000", "Answer: 1,000,000", True, "thousands")
_add("7425000", "The total is 7,425,000.", True, "thousands")
_add("1500", "Answer: $1,500", True, "thousands")
_add("1500", "The answer is $\\$1{,}500$.", True, "thousands", "LaTeX {,} separator")
_add("1500", "The answer is \\boxed{1,500}.", True, "thousands")
_add("14916", "Therefore $\\boxed{14{,}916}$ is the answer.", True, "thousands")
_add("15", "The answer is \\boxed{1,500}.", False, "thousands", "1,500 is fifteen hundred")
_add("1.5", "Answer: 1,500", False, "thousands", "English comma groups thousands")

# ---------------------------------------------------------------- locale: other digit styles

_add("2.5", "Die Antwort ist 2,5 Liter.", True, "locale", "decimal comma")
_add("1000", "Die Antwort ist 1.000 Euro.", True, "locale", "German thousands dot",
     mv_wrong="'1.000' is read as the decimal 1.000 (no locale awareness)")
_add("1000", "Answer: 1'000 CHF", True, "locale", "Swiss apostrophe grouping",
     mv_wrong="apostrophe grouping is not recognised: '1' is extracted")
_add("1000", "Answer: 1\u202f000", True, "locale", "narrow no-break space (SI grouping)",
     mv_wrong="only ',' and ' ' (U+0020) group digits: '1' is extracted")
_add("18", "Answer: \uff11\uff18", True, "locale", "full-width digits",
     mv_wrong="full-width digits are not numbers to its regexes: parse returns []")
_add("-3", "The answer is \u22123.", True, "locale", "Unicode minus sign in prose",
     mv_wrong="U+2212 is only understood inside LaTeX; in prose it blocks the number regex "
     "(a number must follow a space, '=' or the start): parse returns []")
_add("-3", "The answer is \\boxed{\u22123}.", True, "locale", "Unicode minus inside a box")

# ---------------------------------------------------------------- percent

_add("$25\\%$", "The discount is $\\boxed{25\\%}$.", True, "percent")
_add("$25\\%$", "The discount is 25 percent.", True, "percent")
_add("$25\\%$", "The discount is $\\boxed{0.25}$.", True, "percent", "25% = 0.25")
_add("$25\\%$", "The discount is $\\boxed{\\frac{1}{4}}$.", True, "percent")
_add("$25\\%$", "The discount is $\\boxed{25}$.", True, "percent",
     "the question asks for a percent; the bare number is the percent value")
_add("$25\\%$", "The discount is $\\boxed{2.5\\%}$.", False, "percent")
_add("25", "The discount is 25%.", True, "percent",
     "GSM8K percent questions have bare-number references")
_add("0.18", "The answer is 18%.", True, "percent", "18% = 0.18")
_add("$18\\%$", "The answer is 0.18", True, "percent")
_add("0.25", "The discount is 25.", False, "percent", "25 is not 0.25")
_add("40", "Answer: 40%", True, "percent")
_add("12.5", "The price went from $40 to $45, an increase of 5.\n5 / 40 = 0.125, which is 12.5%.\n"
     "#### 12.5%", True, "percent")

# ---------------------------------------------------------------- latex-frac

_add("18", "So the answer is \\boxed{\\frac{36}{2}}.", True, "latex-frac", "unsimplified fraction")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\frac{3}{4}}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\dfrac{3}{4}}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\tfrac{3}{4}}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\frac34}$.", True, "latex-frac",
     "brace-less \\frac34")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\frac{6}{8}}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{3/4}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is 3/4.", True, "latex-frac", "plain-text fraction")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{0.75}$.", True, "latex-frac")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\frac{4}{3}}$.", False, "latex-frac",
     "inverted fraction")
_add("$\\frac{10}{9}$", "So the ratio is 10/9.", True, "latex-frac")
_add("$-\\frac{1}{2}$", "The slope is $\\boxed{-\\frac12}$.", True, "latex-frac")
_add("$-\\frac{1}{2}$", "The slope is $\\boxed{\\frac{-1}{2}}$.", True, "latex-frac")
_add("$-\\frac{1}{2}$", "The slope is $\\boxed{\\frac{1}{2}}$.", False, "latex-frac",
     "sign dropped")
_add("$\\frac{5}{2}$", "So the answer is $\\boxed{2\\frac{1}{2}}$.", True, "latex-frac",
     "LaTeX mixed number")
_add("$\\frac{5}{2}$", "She needs 2 1/2 cups of flour.", True, "latex-frac",
     "plain-text mixed number",
     mv_wrong="'2 1/2' is extracted as one expression, fails to parse (sympy syntax error), and "
     "the next candidate, the plain number 1, is taken")
_add("$\\frac{1}{3}$", "So the answer is $\\boxed{0.\\overline{3}}$.", True, "latex-frac",
     "repeating decimal",
     mv_wrong="\\overline (repeating decimal) does not parse; only its string is kept")

# ---------------------------------------------------------------- decimal

_add("18", "The answer is 18.0", True, "decimal")
_add("-3.5", "The answer is \\boxed{-\\frac{7}{2}}.", True, "decimal")
_add("-3.5", "The balance starts at 4.50 and she pays 8.00, so 4.50 - 8.00 = -3.50.\n#### -3.50",
     True, "decimal")
_add("0.4", "The answer is .4", True, "decimal", "no leading zero")
_add("2.5", "The answer is 2.50", True, "decimal")
_add("$\\frac{1}{3}$", "So the answer is $\\boxed{0.333}$.", False, "decimal",
     "a 3-digit approximation is not the exact value")
_add("$\\frac{2}{3}$", "So the probability is $\\boxed{0.6667}$.", False, "decimal",
     "a 4-digit approximation is not the exact value")
_add("0.05", "The answer is 0.5", False, "decimal", "off by a factor of ten")
_add("100", "#### 99.9", False, "decimal")

# ---------------------------------------------------------------- negative

_add("-7", "The answer is -7.", True, "negative")
_add("-7", "The answer is \\boxed{-7}.", True, "negative")
_add("-7", "The answer is 7.", False, "negative", "sign flip")
_add("7", "The answer is \\boxed{-7}.", False, "negative", "sign flip")
_add("-3", "The temperature dropped to -3 degrees.", True, "negative")
_add("-3", "The answer is \\boxed{- 3}.", True, "negative", "space after the minus")

# ---------------------------------------------------------------- sqrt

_add("$2\\sqrt{3}$", "Simplifying, $\\sqrt{12} = \\boxed{2\\sqrt{3}}$.", True, "sqrt")
_add("$2\\sqrt{3}$", "Simplifying, $\\boxed{\\sqrt{12}}$.", True, "sqrt", "unsimplified radical")
_add("$2\\sqrt{3}$", "Simplifying, $\\boxed{2\\sqrt3}$.", True, "sqrt", "brace-less \\sqrt3")
_add("$2\\sqrt{3}$", "Simplifying, $\\boxed{3\\sqrt{2}}$.", False, "sqrt")
_add("$\\frac{\\sqrt{3}}{3}$", "The answer is $\\boxed{\\frac{1}{\\sqrt{3}}}$.", True, "sqrt",
     "unrationalised denominator")
_add("$\\frac{\\sqrt{3}}{3}$", "The answer is $\\boxed{\\frac{\\sqrt{3}}{2}}$.", False, "sqrt")
_add("$2\\sqrt{2}$", "The answer is $\\boxed{\\sqrt{8}}$.", True, "sqrt")
_add("$\\sqrt{2}$", "The diagonal of the unit square is sqrt(2).", True, "sqrt",
     "plain-text sqrt()",
     mv_wrong="plain-text 'sqrt(2)' outside a math environment is not extracted: []")

# ---------------------------------------------------------------- pi

_add("$6\\pi$", "The area is $\\boxed{6\\pi}$ square units.", True, "pi")
_add("$6\\pi$", "The area is $\\boxed{3\\pi}$.", False, "pi")
_add("$6\\pi$", "The area is $\\boxed{18.85}$.", False, "pi",
     "the exact answer is asked for; 18.85 is an approximation")
_add("$\\frac{9\\pi}{2}$", "The volume is $\\boxed{4.5\\pi}$.", True, "pi")
_add("$\\frac{\\pi}{2}$", "The angle is $\\boxed{\\pi/2}$.", True, "pi")
_add("$\\pi$", "The period is $\\boxed{2\\pi}$.", False, "pi")
_add("$\\frac{\\pi}{6}$", "The angle is $\\boxed{\\frac{\\pi}{3}}$.", False, "pi")

# ---------------------------------------------------------------- scientific notation

_add("300000", "The answer is $3 \\times 10^5$.", True, "scientific")
_add("$3 \\times 10^{5}$", "The population is 300000.", True, "scientific")
_add("0.00012", "The answer is $1.2 \\times 10^{-4}$.", True, "scientific")
_add("0.0015", "The answer is $1.5 \\cdot 10^{-3}$.", True, "scientific")
_add("$1.5 \\times 10^{-3}$", "So it is $\\boxed{0.0015}$.", True, "scientific")
_add("$1.5 \\times 10^{-3}$", "So it is $\\boxed{0.015}$.", False, "scientific",
     "exponent off by one")
_add("$6.02 \\times 10^{23}$", "That is $\\boxed{6.02 \\times 10^{22}}$ molecules.", False,
     "scientific", "exponent off by one")
_add("0.0015", "The answer is 1.5e-3.", True, "scientific", "e-notation in prose",
     mv_wrong="e-notation is not a number to the extraction regexes: '1.5' is extracted")
_add("$6.02 \\times 10^{23}$", "That is $\\boxed{602000000000000000000000}$ molecules.", True,
     "scientific", "the same number written out",
     mv_wrong="float_rounding applies only when one side is an atomic Float; the reference is "
     "the unevaluated product 6.02*10**23, compared exactly, and binary 6.02 is not exact")

# ---------------------------------------------------------------- degrees

_add("$30^\\circ$", "The angle measures $\\boxed{30^\\circ}$.", True, "degrees")
_add("$30^\\circ$", "The angle measures $\\boxed{30}$ degrees.", True, "degrees")
_add("30", "Therefore $\\angle ABC = \\boxed{30^{\\circ}}$.", True, "degrees")
_add("30", "Therefore $\\angle ABC = \\boxed{60^{\\circ}}$.", False, "degrees")
_add("90", "The angle is $90^{\\circ}$.", True, "degrees")
_add("$45^\\circ$", "So $\\angle B = \\boxed{135^{\\circ}}$.", False, "degrees",
     "supplement, not the angle")

# ---------------------------------------------------------------- interval

_add("$(1,2]$", "The answer is $(1, 2]$", True, "interval")
_add("$(1,2]$", "The answer is $(1, 2)$", False, "interval", "open vs closed end")
_add("$(1,2]$", "The answer is $[1, 2]$", False, "interval")
_add("$(-\\infty, 3]$", "So $x \\le 3$ and the solution set is $\\boxed{(-\\infty, 3]}$.",
     True, "interval")
_add("$(-\\infty, 3]$", "So the solution set is $\\boxed{(-\\infty, 3)}$.", False, "interval")
_add("$[-2, 5)$", "The domain is $\\boxed{\\left[-2, 5\\right)}$.", True, "interval")
_add("$(-\\infty, -1) \\cup (2, \\infty)$", "Therefore $\\boxed{(2,\\infty)\\cup(-\\infty,-1)}$.",
     True, "interval", "union in the other order")
_add("$(-\\infty, -1) \\cup (2, \\infty)$", "Therefore $\\boxed{(-\\infty,-1]\\cup[2,\\infty)}$.",
     False, "interval")
_add("$(0, \\infty)$", "The range is $\\boxed{(0, +\\infty)}$.", True, "interval")
_add("$(0, \\infty)$", "The range is $\\boxed{[0,\\infty)}$.", False, "interval")
_add("$(-\\infty, \\infty)$", "The domain is $\\boxed{\\mathbb{R}}$.", True, "interval")
_add("$[2, 7]$", "The interval is $\\boxed{[7, 2]}$.", False, "interval", "endpoints swapped")
_add("$(-\\infty, 3]$", "So the solution is $\\boxed{x \\le 3}$.", True, "interval",
     "inequality for an interval reference",
     mv_wrong="a relation is compared with a set only when the PREDICTION is the set "
     "(allow_set_relation_comp=False by default); the reverse direction verifies")

# ---------------------------------------------------------------- inequality

_add("$x > 2$", "So $\\boxed{x > 2}$.", True, "inequality")
_add("$x > 2$", "So $\\boxed{2 < x}$.", True, "inequality", "flipped")
_add("$x > 2$", "So $\\boxed{x \\geq 2}$.", False, "inequality", "strict vs non-strict")
_add("$x > 2$", "The interval is $\\boxed{(2, \\infty)}$.", True, "inequality")
_add("$2 \\le x \\le 7$", "The interval is $\\boxed{[2, 7]}$.", True, "inequality")

# ---------------------------------------------------------------- set

_add("$\\{1,2\\}$", "The answer is $\\{2, 1\\}$", True, "set", "order of a set is irrelevant")
_add("$\\{1,2\\}$", "The solutions are $x = 1$ and $x = 2$, so the set is "
     "$\\boxed{\\{1, 2\\}}$.", True, "set")
_add("$\\{1,2\\}$", "\\boxed{\\{1, 2, 3\\}}", False, "set", "extra element")
_add("$\\{1,2\\}$", "The solutions are $\\boxed{1, 2}$.", True, "set")
_add("$\\{-2, 3\\}$", "The answer is $\\boxed{\\{-2\\}}$.", False, "set", "missing element")
_add("$-2, 3$", "The roots are $x = -2$ and $x = 3$, so the answer is $\\boxed{-2, 3}$.",
     True, "set")
_add("$-2, 3$", "The roots are $\\boxed{3, -2}$.", True, "set", "roots in another order")
_add("$-2, 3$", "The roots are $\\boxed{2, -3}$.", False, "set", "signs flipped")
_add("$-2, 3$", "The roots are $\\boxed{-2, 3, 5}$.", False, "set")
_add("$-2, 3$", "The roots are $\\boxed{x = -2, x = 3}$.", True, "set")
_add("$\\emptyset$", "There are no solutions, so the set is $\\boxed{\\emptyset}$.", True, "set")
_add("$\\emptyset$", "There are no solutions, so the set is $\\boxed{\\{\\}}$.", True, "set")
_add("$\\emptyset$", "There is one solution, $\\boxed{\\{0\\}}$.", False, "set")
_add("$\\emptyset$", "There are no solutions, so the set is $\\boxed{\\varnothing}$.", True, "set",
     mv_wrong="\\varnothing is parsed as a symbol named varnothing, not the empty set")

# ---------------------------------------------------------------- tuple

_add("$(3, -1)$", "Solving the system gives $x = 3$ and $y = -1$, so the ordered pair is "
     "$\\boxed{(3,-1)}$.", True, "tuple")
_add("$(3, -1)$", "Solving the system gives \\boxed{(-1, 3)}.", False, "tuple",
     "coordinates swapped")
_add("$(3, -1)$", "Solving the system gives $\\boxed{x=3, y=-1}$.", True, "tuple")
_add("$(3, -1)$", "So the answer is $\\boxed{3, -1}$.", True, "tuple", "pair without parentheses")
_add("$(3, -1)$", "So the answer is $\\boxed{-1, 3}$.", False, "tuple", "order matters")
_add("$(3, -1, 2)$", "The point is $\\boxed{(3, -1, 2)}$.", True, "tuple")
_add("$(3, -1, 2)$", "The point is $\\boxed{(3, 2, -1)}$.", False, "tuple")
_add("$(1, 2, 3)$", "The triple is $\\boxed{(3, 2, 1)}$.", False, "tuple")
_add("$(1,2)$", "The point is \\boxed{(2, 1)}.", False, "tuple",
     "a pair that also reads as an interval")
_add("$(3, \\frac{\\pi}{2})$", "We have $r = \\sqrt{0^2 + 3^2} = 3$, and the angle is "
     "$\\frac{\\pi}{2}$.\nTherefore, the polar coordinates are "
     "$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$", True, "tuple")
_add("$(3, \\frac{\\pi}{2})$", "Therefore, the polar coordinates are "
     "$\\boxed{\\left( 3, \\pi \\right)}.$", False, "tuple")
_add("$(3, -1)$", "So the answer is $\\boxed{\\{3, -1\\}}$.", False, "tuple",
     "an unordered set is not an ordered pair",
     mv_wrong="a set prediction is compared with a tuple reference in the order it was written, "
     "even in strict mode (the verify docstring says strict keeps sets and tuples apart)")

# ---------------------------------------------------------------- multi-box

_add("$(2,2),(6,2)$", "The pairs are \\boxed{(2, 2)} and \\boxed{(6, 2)}.", True, "multi-box")
_add("$(2,2),(6,2)$", "The pairs are \\boxed{(6, 2)} and \\boxed{(2, 2)}.", True, "multi-box",
     "solution pairs in another order")
_add("$(2,2),(6,2)$", "The only pair is \\boxed{(2, 2)}.", False, "multi-box", "one pair missing")
_add("$(2,2),(6,2)$", "The pairs are \\boxed{(2, 2)}, \\boxed{(6, 2)}, and \\boxed{(1, 1)}.",
     False, "multi-box", "an extra pair")
_add("$(2,2),(6,2)$", "The solutions are $\\boxed{(6,2),(2,2)}$.", True, "multi-box",
     "one box holding both pairs")
_add("$(2,2),(6,2)$", "The solutions are $(2,2)$ and $(6,2)$.", True, "multi-box",
     "no boxes: two math environments joined by 'and'")
_add("$1, 2$", "The roots are \\boxed{1} and \\boxed{2}.", True, "multi-box")
_add("$1, 2$", "The roots are \\boxed{1}.", False, "multi-box")
_add("$(3,4)$", "So $x = \\boxed{3}$ and $y = \\boxed{4}$.", True, "multi-box",
     "ordered pair given as two boxed coordinates")
_add("5", "The answer is \\boxed{5}. Double-checking: 2 + 3 = 5, so the final answer is "
     "\\boxed{5}.", True, "multi-box", "the same box repeated")
_add("18", "We get \\boxed{20}.\n\nWait, I made an error in the second step: she uses 4 eggs "
     "for muffins, not 2, so she sells 9 eggs and earns 9 times 2 dollars. The answer is "
     "\\boxed{18}.", True, "multi-box", "self-correction far from the first box")
_add("18", "First attempt: \\boxed{18}.\n\nWait, I made an error in the second step: she uses "
     "4 eggs for muffins, not 2, so she sells 10 eggs and earns 10 times 2 dollars. The answer "
     "is \\boxed{20}.", False, "multi-box", "the final box is wrong")
_add("18", "We get \\boxed{18}. Hmm, that's wrong; recomputing, the answer is \\boxed{20}.",
     False, "multi-box", "the final box is wrong")
_add("18", "We get \\boxed{20}. Hmm, that's wrong; recomputing, the answer is \\boxed{18}.",
     True, "multi-box", "self-correction: the final box is right",
     mv_wrong="boxes less than 70 characters apart with a separator (',', ';', 'and', 'or') "
     "between them are merged into one set {18, 20}")

# ---------------------------------------------------------------- matrix

_add("$\\begin{pmatrix} 2 & 0 \\\\ 1 & 3 \\end{pmatrix}$", "Multiplying out, we get "
     "$\\boxed{\\begin{pmatrix} 2 & 0 \\\\ 1 & 3 \\end{pmatrix}}$.", True, "matrix")
_add("$\\begin{pmatrix} 2 & 0 \\\\ 1 & 3 \\end{pmatrix}$", "Multiplying out, we get "
     "$\\boxed{\\begin{pmatrix} 2 & 1 \\\\ 0 & 3 \\end{pmatrix}}$.", False, "matrix", "transposed")
_add("$\\begin{pmatrix} 2 & 0 \\\\ 1 & 3 \\end{pmatrix}$", "Multiplying out, we get "
     "$\\boxed{\\begin{bmatrix} 2 & 0 \\\\ 1 & 3 \\end{bmatrix}}$.", True, "matrix",
     "bmatrix vs pmatrix")
_add("$\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$",
     "$$\\boxed{\\left[\\begin{matrix} 1 & 2 \\\\ 3 & 4 \\end{matrix}\\right]}$$", True, "matrix")
_add("$\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$",
     "$$\\boxed{\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}}$$", False, "matrix")
_add("$\\begin{pmatrix} 1/2 \\\\ -3 \\end{pmatrix}$", "The vector is "
     "$\\boxed{\\begin{pmatrix} 0.5 \\\\ -3 \\end{pmatrix}}$.", True, "matrix")
_add("$\\begin{pmatrix} 1/2 \\\\ -3 \\end{pmatrix}$", "The vector is "
     "$\\boxed{\\begin{pmatrix} \\frac{1}{2} \\\\ -3 \\end{pmatrix}}$.", True, "matrix")
_add("$\\begin{pmatrix} 1/2 \\\\ -3 \\end{pmatrix}$", "The vector is "
     "$\\boxed{\\begin{pmatrix} 1/2 \\\\ 3 \\end{pmatrix}}$.", False, "matrix", "sign flip")
_add("$\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}$", "The projection is "
     "$\\boxed{\\begin{pmatrix} -1 \\\\ 3 \\end{pmatrix}}$.", False, "matrix")
_add("$\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}$", "The projection is "
     "\\[\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}.\\]", True, "matrix",
     "display math ending with a period",
     mv_wrong="the '.' inside \\[...\\] makes the matrix fail to parse; the plain number -1 is "
     "extracted instead")

# ---------------------------------------------------------------- equation

_add("5", "Solving, $2x = 10$ so $\\boxed{x = 5}$.", True, "equation", "x = 5 vs 5")
_add("$x=5$", "Solving, $2x = 10$, so the answer is $\\boxed{5}$.", True, "equation")
_add("5", "Therefore $x = 5$.", True, "equation")
_add("$5$", "Solving, $2x = 10$ so $\\boxed{x = 6}$.", False, "equation")
_add("$x = 5$", "Thus $\\boxed{y = 5}$.", False, "equation", "wrong variable")
_add("$y = 2x + 3$", "The line is $\\boxed{y = 3 + 2x}$.", True, "equation")
_add("$y = 2x + 3$", "The line is $\\boxed{y - 2x = 3}$.", True, "equation",
     "equivalent rearrangement")
_add("$y = 2x + 3$", "The line is $\\boxed{y = 2x - 3}$.", False, "equation")

# ---------------------------------------------------------------- expression

_add("$x^2 + 2x + 1$", "Expanding, $\\boxed{(x+1)^2}$.", True, "expression")
_add("$x^2 + 2x + 1$", "Expanding, $\\boxed{x^2+2x-1}$.", False, "expression")
_add("$2-2p$", "Since $x<2$, $|x-2| = 2-x$. If $2-x=p$, then $x=2-p$. Thus "
     "$x-p=\\boxed{2-2p}$.", True, "expression")
_add("$2-2p$", "Thus $x-p=\\boxed{2+2p}$.", False, "expression")
_add("$\\frac{x+1}{x-1}$", "Simplifying, $\\boxed{\\frac{x^2+2x+1}{x^2-1}}$.", True,
     "expression", "unsimplified but equal")
_add("$\\frac{x+1}{x-1}$", "Simplifying, $\\boxed{\\frac{x-1}{x+1}}$.", False, "expression")

# ---------------------------------------------------------------- text answers

_add("$\\text{Evelyn}$", "Evelyn covered more distance in less time, so "
     "$\\boxed{\\text{Evelyn}}$ is the fastest.", True, "text")
_add("$\\text{Evelyn}$", "So the fastest runner is $\\boxed{\\text{Briana}}$.", False, "text")
_add("$\\text{(C)}$", "The correct option is $\\boxed{\\text{(C)}}$.", True, "text")
_add("$\\text{(C)}$", "The correct option is $\\boxed{C}$.", True, "text")
_add("$\\text{(C)}$", "The correct option is $\\boxed{D}$.", False, "text")
_add("$\\text{odd}$", "Therefore the function is $\\boxed{\\text{odd}}$.", True, "text")
_add("$\\text{odd}$", "Therefore the function is $\\boxed{\\text{even}}$.", False, "text")
_add("$\\text{(C)}$", "The correct option is (C).", True, "text", "option letter in prose",
     mv_wrong="letters are only extracted with StringExtractionConfig, which the default "
     "parse does not use: []")

# ---------------------------------------------------------------- truncated outputs

_add("18", "\\boxed{18", False, "truncated",
     "generation cut off inside the box: the answer is not final")
_add("18", "She sells 16 - 3 - 4 = 9 eggs at $2 each, so she makes 9 *", False, "truncated")
_add("18", "First, 16 - 3 = 13. Then 13 - 4 = 9. So she sells 9 eggs, which at $2 each gives",
     False, "truncated")
_add("18", "Let's compute 9 * 2. Hmm, I am not sure how to continue from here.", False,
     "truncated", "no final answer is given",
     mv_wrong="the bare expression '9 * 2' is extracted and evaluates to 18")

# ---------------------------------------------------------------- garbage / empty

_add("18", "", False, "garbage", "empty output")
_add("18", "I don't know.", False, "garbage")
_add("0", "I don't know.", False, "garbage", "zero reference and no number")
_add("18", "!!!!!!!!!!!!!!!!!!!!!!!!", False, "garbage")
_add("18", "<|im_end|>", False, "garbage")
_add("18", "1111111111111111111111111111111111", False, "garbage")
_add("18", "the the the the the the the the the the", False, "garbage")
_add("18", "The answer is \\boxed{}.", False, "garbage", "empty box")

# ---------------------------------------------------------------- close but wrong

_add("18", _EGGS.replace("= 18", "= 19") + "#### 19", False, "wrong", "arithmetic slip")
_add("18", "#### 180", False, "wrong", "extra zero")
_add("18", "#### 1.8", False, "wrong", "misplaced decimal point")
_add("18", "The answer is 16.", False, "wrong", "intermediate value")
_add("18", "The answer is \\boxed{9}.", False, "wrong", "stopped one step early")
_add("18", "The answer is -18.", False, "wrong", "sign flip")
_add("0.18", "The answer is 18", False, "wrong", "18 is not 0.18")
_add("0", "The answer is 0.", True, "prose", "zero is a real answer, not an empty one")
_add("0", "The answer is $\\boxed{0}$.", True, "boxed")
_add("$\\frac{3}{4}$", "So the probability is $\\boxed{\\frac{3}{5}}$.", False, "wrong")
