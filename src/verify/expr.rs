//! A small expression language for answers: parser (LaTeX and plain text)
//! and evaluators (exact rationals over `i128`, complex `f64`).
//!
//! Supported: `+ - * /`, `^` (right associative, `{}` or a single token),
//! implicit multiplication (`2x`, `3\sqrt{2}`, `(a+1)(b+2)`), `\cdot`,
//! `\times`, `\div`, `\frac{a}{b}` (also `\frac12`, `\frac1{2}`), mixed
//! numbers (`2\frac{1}{2}` is 2.5), `\sqrt{x}`, `\sqrt[n]{x}`, `\sqrt2`,
//! functions (`sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh
//! log ln exp`, with or without backslash, `\sin^2 x`, `\log_{b}`), `|x|`,
//! `n!`, constants `\pi`, `e`, `i` (imaginary unit), `\infty`, scientific
//! notation (`1.5e3`), and variables (letters, Greek commands, subscripts).
//! `\log` without a base is base 10; `\ln` is natural.
//!
//! Bounds: recursion depth is capped at [`MAX_DEPTH`]; evaluation is in
//! `f64`, so `10^{10^{10}}` overflows to an error instead of allocating.

use std::collections::BTreeSet;

/// Deepest nesting the parser accepts.
pub(crate) const MAX_DEPTH: usize = 120;

/// An exact rational number with a positive denominator, in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rational {
    num: i128,
    den: i128,
}

impl Rational {
    /// `num / den` in lowest terms; `None` when `den == 0` or on overflow.
    pub(crate) fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num.checked_abs()?, den.checked_abs()?).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Some(Rational {
            num: sign * (num / g),
            den: (den / g).checked_abs()?,
        })
    }

    fn integer(n: i128) -> Self {
        Rational { num: n, den: 1 }
    }

    fn add(self, o: Self) -> Option<Self> {
        let num = self
            .num
            .checked_mul(o.den)?
            .checked_add(o.num.checked_mul(self.den)?)?;
        Rational::new(num, self.den.checked_mul(o.den)?)
    }

    fn mul(self, o: Self) -> Option<Self> {
        Rational::new(self.num.checked_mul(o.num)?, self.den.checked_mul(o.den)?)
    }

    fn neg(self) -> Option<Self> {
        Some(Rational {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    fn recip(self) -> Option<Self> {
        Rational::new(self.den, self.num)
    }

    fn pow(self, exp: Self) -> Option<Self> {
        if exp.den != 1 || exp.num.abs() > 256 {
            return None;
        }
        let mut acc = Rational::integer(1);
        for _ in 0..exp.num.abs() {
            acc = acc.mul(self)?;
        }
        if exp.num < 0 {
            acc.recip()
        } else {
            Some(acc)
        }
    }

    fn as_integer(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A complex number in `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Complex {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl Complex {
    fn real(re: f64) -> Self {
        Complex { re, im: 0.0 }
    }
    fn add(self, o: Self) -> Self {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    fn sub(self, o: Self) -> Self {
        Complex {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    fn mul(self, o: Self) -> Self {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    /// `|self - o|`.
    pub(crate) fn sub_abs(self, o: Self) -> f64 {
        self.sub(o).abs()
    }
    /// `self / o`.
    pub(crate) fn div(self, o: Self) -> Self {
        let d = o.re * o.re + o.im * o.im;
        Complex {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }
    /// Modulus.
    pub(crate) fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
    fn exp(self) -> Self {
        let m = self.re.exp();
        Complex {
            re: m * self.im.cos(),
            im: m * self.im.sin(),
        }
    }
    fn ln(self) -> Self {
        Complex {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        }
    }
    fn powc(self, w: Self) -> Self {
        if w.im == 0.0 && w.re.fract() == 0.0 && w.re.abs() <= 64.0 {
            return self.powi(w.re as i32);
        }
        if self.re == 0.0 && self.im == 0.0 {
            return Complex::real(if w.re > 0.0 { 0.0 } else { f64::NAN });
        }
        if self.im == 0.0 && self.re > 0.0 && w.im == 0.0 {
            return Complex::real(self.re.powf(w.re));
        }
        w.mul(self.ln()).exp()
    }
    fn powi(self, n: i32) -> Self {
        let mut acc = Complex::real(1.0);
        for _ in 0..n.unsigned_abs() {
            acc = acc.mul(self);
        }
        if n < 0 {
            Complex::real(1.0).div(acc)
        } else {
            acc
        }
    }
    fn sin(self) -> Self {
        Complex {
            re: self.re.sin() * self.im.cosh(),
            im: self.re.cos() * self.im.sinh(),
        }
    }
    fn cos(self) -> Self {
        Complex {
            re: self.re.cos() * self.im.cosh(),
            im: -self.re.sin() * self.im.sinh(),
        }
    }
}

/// Constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Constant {
    /// `\pi`
    Pi,
    /// Euler's number `e`.
    E,
    /// The imaginary unit `i`.
    I,
    /// `\infty` (only meaningful as an interval end).
    Infinity,
}

/// Unary functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log10,
    Exp,
    Abs,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "sec" => Func::Sec,
            "csc" => Func::Csc,
            "cot" => Func::Cot,
            "arcsin" => Func::Asin,
            "arccos" => Func::Acos,
            "arctan" => Func::Atan,
            "sinh" => Func::Sinh,
            "cosh" => Func::Cosh,
            "tanh" => Func::Tanh,
            "ln" => Func::Ln,
            "log" => Func::Log10,
            "exp" => Func::Exp,
            _ => return None,
        })
    }

    fn apply(self, z: Complex) -> Complex {
        let one = Complex::real(1.0);
        match self {
            Func::Sin => z.sin(),
            Func::Cos => z.cos(),
            Func::Tan => z.sin().div(z.cos()),
            Func::Sec => one.div(z.cos()),
            Func::Csc => one.div(z.sin()),
            Func::Cot => z.cos().div(z.sin()),
            Func::Asin if z.im == 0.0 => Complex::real(z.re.asin()),
            Func::Acos if z.im == 0.0 => Complex::real(z.re.acos()),
            Func::Atan if z.im == 0.0 => Complex::real(z.re.atan()),
            Func::Asin | Func::Acos | Func::Atan => Complex::real(f64::NAN),
            Func::Sinh => z
                .exp()
                .sub(z.mul(Complex::real(-1.0)).exp())
                .div(Complex::real(2.0)),
            Func::Cosh => z
                .exp()
                .add(z.mul(Complex::real(-1.0)).exp())
                .div(Complex::real(2.0)),
            Func::Tanh => {
                let (a, b) = (z.exp(), z.mul(Complex::real(-1.0)).exp());
                a.sub(b).div(a.add(b))
            }
            Func::Ln => z.ln(),
            Func::Log10 => z.ln().div(Complex::real(std::f64::consts::LN_10)),
            Func::Exp => z.exp(),
            Func::Abs => Complex::real(z.abs()),
        }
    }
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A literal; `exact` is set when it is a finite decimal that fits.
    Num { value: f64, exact: Option<Rational> },
    /// A named constant.
    Const(Constant),
    /// A free variable.
    Var(String),
    /// `-a`.
    Neg(Box<Expr>),
    /// `a + b`.
    Add(Box<Expr>, Box<Expr>),
    /// `a - b`.
    Sub(Box<Expr>, Box<Expr>),
    /// `a * b`.
    Mul(Box<Expr>, Box<Expr>),
    /// `a / b`.
    Div(Box<Expr>, Box<Expr>),
    /// `a ^ b`.
    Pow(Box<Expr>, Box<Expr>),
    /// `f(a)`.
    Call(Func, Box<Expr>),
    /// `log_b(a)` as (base, argument).
    LogBase(Box<Expr>, Box<Expr>),
    /// `n!`.
    Factorial(Box<Expr>),
}

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvalError {
    /// A result was infinite or NaN (overflow, pole, `\infty` in arithmetic).
    NonFinite,
    /// A variable had no value.
    Unbound,
}

impl Expr {
    /// `Some(+1)` / `Some(-1)` for `\infty` / `-\infty` (with `+` allowed).
    pub(crate) fn infinity_sign(&self) -> Option<i8> {
        match self {
            Expr::Const(Constant::Infinity) => Some(1),
            Expr::Neg(inner) => inner.infinity_sign().map(|s| -s),
            _ => None,
        }
    }

    /// Names of the free variables.
    pub(crate) fn variables(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Var(name) => {
                out.insert(name.clone());
            }
            Expr::Num { .. } | Expr::Const(_) => {}
            Expr::Neg(a) | Expr::Call(_, a) | Expr::Factorial(a) => a.variables(out),
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::LogBase(a, b) => {
                a.variables(out);
                b.variables(out);
            }
        }
    }

    /// Exact value when the expression is built from rationals only.
    pub(crate) fn exact(&self) -> Option<Rational> {
        match self {
            Expr::Num { exact, .. } => *exact,
            Expr::Neg(a) => a.exact()?.neg(),
            Expr::Add(a, b) => a.exact()?.add(b.exact()?),
            Expr::Sub(a, b) => a.exact()?.add(b.exact()?.neg()?),
            Expr::Mul(a, b) => a.exact()?.mul(b.exact()?),
            Expr::Div(a, b) => a.exact()?.mul(b.exact()?.recip()?),
            Expr::Pow(a, b) => a.exact()?.pow(b.exact()?),
            Expr::Factorial(a) => factorial_exact(a.exact()?.as_integer()?),
            _ => None,
        }
    }

    /// Complex value with variables looked up in `env`.
    pub(crate) fn eval(&self, env: &dyn Fn(&str) -> Option<Complex>) -> Result<Complex, EvalError> {
        let v = match self {
            Expr::Num { value, .. } => Complex::real(*value),
            Expr::Const(Constant::Pi) => Complex::real(std::f64::consts::PI),
            Expr::Const(Constant::E) => Complex::real(std::f64::consts::E),
            Expr::Const(Constant::I) => Complex { re: 0.0, im: 1.0 },
            Expr::Const(Constant::Infinity) => return Err(EvalError::NonFinite),
            Expr::Var(name) => env(name).ok_or(EvalError::Unbound)?,
            Expr::Neg(a) => Complex::real(0.0).sub(a.eval(env)?),
            Expr::Add(a, b) => a.eval(env)?.add(b.eval(env)?),
            Expr::Sub(a, b) => a.eval(env)?.sub(b.eval(env)?),
            Expr::Mul(a, b) => a.eval(env)?.mul(b.eval(env)?),
            Expr::Div(a, b) => a.eval(env)?.div(b.eval(env)?),
            Expr::Pow(a, b) => a.eval(env)?.powc(b.eval(env)?),
            Expr::Call(f, a) => f.apply(a.eval(env)?),
            Expr::LogBase(base, a) => a.eval(env)?.ln().div(base.eval(env)?.ln()),
            Expr::Factorial(a) => factorial_f64(a.eval(env)?)?,
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(EvalError::NonFinite)
        }
    }
}

fn factorial_exact(n: i128) -> Option<Rational> {
    if !(0..=33).contains(&n) {
        return None;
    }
    (1..=n)
        .try_fold(1i128, |acc, k| acc.checked_mul(k))
        .map(Rational::integer)
}

fn factorial_f64(z: Complex) -> Result<Complex, EvalError> {
    let n = z.re;
    if z.im != 0.0 || n.fract() != 0.0 || !(0.0..=170.0).contains(&n) {
        return Err(EvalError::NonFinite);
    }
    Ok(Complex::real(
        (1..=n as u32).fold(1.0, |acc, k| acc * f64::from(k)),
    ))
}

/// Why parsing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Input ended or a token was not expected here.
    Unexpected,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A command or construct outside the supported language.
    Unsupported,
}

type PResult = Result<Expr, ParseError>;

/// Parses a whole normalised answer as one expression.
pub(crate) fn parse_expr(text: &str) -> PResult {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser {
        s: &chars,
        pos: 0,
        depth: 0,
    };
    let e = p.sum()?;
    p.skip_ws();
    if p.pos == chars.len() {
        Ok(e)
    } else {
        Err(ParseError::Unexpected)
    }
}

struct Parser<'a> {
    s: &'a [char],
    pos: usize,
    depth: usize,
}

fn bin(f: fn(Box<Expr>, Box<Expr>) -> Expr, a: Expr, b: Expr) -> Expr {
    f(Box::new(a), Box::new(b))
}

const GREEK: [&str; 24] = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
];

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(ParseError::Unexpected)
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(())
        }
    }

    /// The command name at the cursor (`\frac` gives `frac`) without moving.
    fn peek_command(&self) -> Option<String> {
        if self.peek() != Some('\\') {
            return None;
        }
        let name: String = self.s[self.pos + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        Some(name)
    }

    fn sum(&mut self) -> PResult {
        self.enter()?;
        let mut lhs = self.product()?;
        loop {
            if self.eat('+') {
                lhs = bin(Expr::Add, lhs, self.product()?);
            } else if self.eat('-') {
                lhs = bin(Expr::Sub, lhs, self.product()?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn product(&mut self) -> PResult {
        let mut lhs = self.unary()?;
        let mut factors = 1;
        loop {
            self.skip_ws();
            if self.eat('*') {
                lhs = bin(Expr::Mul, lhs, self.unary()?);
            } else if self.eat('/') {
                lhs = bin(Expr::Div, lhs, self.unary()?);
            } else if let Some(op) = self.peek_command().filter(|n| is_product_operator(n)) {
                self.pos += 1 + op.len();
                let rhs = self.unary()?;
                lhs = bin(if op == "div" { Expr::Div } else { Expr::Mul }, lhs, rhs);
            } else if self.starts_factor() {
                let rhs = self.power()?;
                lhs = match mixed_number(&lhs, &rhs, factors) {
                    Some(mixed) => mixed,
                    None => bin(Expr::Mul, lhs, rhs),
                };
            } else {
                break;
            }
            factors += 1;
        }
        Ok(lhs)
    }

    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(c) if c.is_ascii_alphanumeric() || c == '(' || c == '.' => true,
            Some('\\') => self
                .peek_command()
                .is_some_and(|n| !n.is_empty() && !is_product_operator(&n) && !is_stop_command(&n)),
            _ => false,
        }
    }

    fn unary(&mut self) -> PResult {
        self.enter()?;
        let e = if self.eat('-') {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat('+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn power(&mut self) -> PResult {
        let base = self.postfix()?;
        if self.eat('^') {
            let exp = self.exponent()?;
            return Ok(bin(Expr::Pow, base, exp));
        }
        Ok(base)
    }

    /// The exponent after `^`: a `{}` group, or a signed single atom which
    /// may itself carry an exponent (`9^9^9` is `9^(9^9)`).
    fn exponent(&mut self) -> PResult {
        self.enter()?;
        self.skip_ws();
        let e = if self.eat('{') {
            let inner = self.sum()?;
            self.expect('}')?;
            if self.eat('^') {
                bin(Expr::Pow, inner, self.exponent()?)
            } else {
                inner
            }
        } else if self.eat('-') {
            Expr::Neg(Box::new(self.exponent()?))
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn postfix(&mut self) -> PResult {
        let mut e = self.primary()?;
        while self.eat('!') {
            e = Expr::Factorial(Box::new(e));
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult {
        self.skip_ws();
        let c = self.peek().ok_or(ParseError::Unexpected)?;
        match c {
            '0'..='9' | '.' => self.number(),
            '(' | '[' | '{' => self.group(c),
            '|' => {
                self.pos += 1;
                let inner = self.sum()?;
                self.expect('|')?;
                Ok(Expr::Call(Func::Abs, Box::new(inner)))
            }
            '\\' => self.command(),
            c if c.is_ascii_alphabetic() => self.word(),
            _ => Err(ParseError::Unexpected),
        }
    }

    fn group(&mut self, open: char) -> PResult {
        self.pos += 1;
        let close = match open {
            '(' => ')',
            '[' => ']',
            _ => '}',
        };
        let inner = self.sum()?;
        self.expect(close)?;
        Ok(inner)
    }

    fn number(&mut self) -> PResult {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.peek() == Some('.') && self.s.get(self.pos + 1).is_some_and(char::is_ascii_digit) {
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        let mantissa: String = self.s[start..self.pos].iter().collect();
        let exp10 = self.scientific_exponent();
        literal(&mantissa, exp10)
    }

    /// `e3`, `E-5` after a mantissa (only when a digit follows).
    fn scientific_exponent(&mut self) -> i32 {
        if !matches!(self.peek(), Some('e' | 'E')) {
            return 0;
        }
        let mut i = self.pos + 1;
        let negative = self.s.get(i) == Some(&'-');
        if matches!(self.s.get(i), Some('-' | '+')) {
            i += 1;
        }
        let digits: String = self.s[i.min(self.s.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .take(6)
            .collect();
        let Ok(value) = digits.parse::<i32>() else {
            return 0;
        };
        self.pos = i + digits.len();
        if negative {
            -value
        } else {
            value
        }
    }

    /// A `{}` group or a single character / command (the `\frac12` form).
    fn argument(&mut self) -> PResult {
        self.enter()?;
        self.skip_ws();
        let e = match self.peek() {
            Some('{') => self.group('{')?,
            Some(c) if c.is_ascii_digit() => {
                self.pos += 1;
                literal(&c.to_string(), 0)?
            }
            Some(c) if c.is_ascii_alphabetic() => {
                self.pos += 1;
                letter_atom(c)
            }
            Some('\\') => self.command()?,
            _ => return Err(ParseError::Unexpected),
        };
        self.depth -= 1;
        Ok(e)
    }

    fn command(&mut self) -> PResult {
        let name = self.peek_command().ok_or(ParseError::Unexpected)?;
        self.pos += 1 + name.len();
        match name.as_str() {
            "frac" | "dfrac" | "tfrac" | "cfrac" => {
                let num = self.argument()?;
                let den = self.argument()?;
                Ok(bin(Expr::Div, num, den))
            }
            "sqrt" => self.sqrt(),
            "pi" => Ok(Expr::Const(Constant::Pi)),
            "infty" | "infinity" => Ok(Expr::Const(Constant::Infinity)),
            "operatorname" => {
                self.expect('{')?;
                let word: String = self.take_letters();
                self.expect('}')?;
                let f = Func::from_name(&word).ok_or(ParseError::Unsupported)?;
                self.function(f)
            }
            n if GREEK.contains(&n) => Ok(self.with_subscript(n.to_string())),
            n => match Func::from_name(n) {
                Some(f) => self.function(f),
                None => Err(ParseError::Unsupported),
            },
        }
    }

    fn sqrt(&mut self) -> PResult {
        let index = if self.eat('[') {
            let idx = self.sum()?;
            self.expect(']')?;
            Some(idx)
        } else {
            None
        };
        let radicand = self.argument()?;
        let exponent = match index {
            Some(n) => bin(Expr::Div, literal("1", 0)?, n),
            None => literal("0.5", 0)?,
        };
        Ok(bin(Expr::Pow, radicand, exponent))
    }

    /// A function application: optional `_base` (log), optional `^power`
    /// (`\sin^2 x`), then a group or an implicit product of simple atoms.
    fn function(&mut self, f: Func) -> PResult {
        let base = if f == Func::Log10 && self.eat('_') {
            Some(self.argument()?)
        } else {
            None
        };
        let power = if self.eat('^') {
            Some(self.argument()?)
        } else {
            None
        };
        let arg = self.function_argument()?;
        let applied = match base {
            Some(b) => bin(Expr::LogBase, b, arg),
            None => Expr::Call(f, Box::new(arg)),
        };
        Ok(match power {
            Some(p) => bin(Expr::Pow, applied, p),
            None => applied,
        })
    }

    fn function_argument(&mut self) -> PResult {
        self.enter()?;
        self.skip_ws();
        let e = if matches!(self.peek(), Some('(' | '{' | '[')) {
            self.power()?
        } else {
            let mut arg = self.power()?;
            while self.peek().is_some_and(|c| c.is_ascii_alphanumeric())
                || self
                    .peek_command()
                    .is_some_and(|n| n == "pi" || GREEK.contains(&n.as_str()))
            {
                arg = bin(Expr::Mul, arg, self.power()?);
                self.skip_ws();
            }
            arg
        };
        self.depth -= 1;
        Ok(e)
    }

    fn take_letters(&mut self) -> String {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        self.s[start..self.pos].iter().collect()
    }

    /// Plain letters: a function name (`sin x`), or a single-letter atom
    /// (implicit multiplication handles `xy`).
    fn word(&mut self) -> PResult {
        let letters: String = self.s[self.pos..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let mut names = [
            "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos", "tan", "sec",
            "csc", "cot", "log", "ln", "exp", "sqrt", "pi",
        ]
        .iter()
        .filter(|n| letters.starts_with(*n));
        if let Some(name) = names.next() {
            self.pos += name.len();
            return match *name {
                "pi" => Ok(Expr::Const(Constant::Pi)),
                "sqrt" => self.sqrt(),
                n => self.function(Func::from_name(n).ok_or(ParseError::Unsupported)?),
            };
        }
        let c = self.peek().ok_or(ParseError::Unexpected)?;
        self.pos += 1;
        match letter_atom(c) {
            Expr::Var(name) => Ok(self.with_subscript(name)),
            other => Ok(other),
        }
    }

    /// Appends `_k` / `_{k}` and primes to a variable name.
    fn with_subscript(&mut self, mut name: String) -> Expr {
        if self.peek() == Some('_') {
            let start = self.pos;
            self.pos += 1;
            if self.peek() == Some('{') {
                let close = self.s[self.pos..].iter().position(|c| *c == '}');
                match close {
                    Some(off) => self.pos += off + 1,
                    None => self.pos = start,
                }
            } else if self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                self.pos += 1;
            } else {
                self.pos = start;
            }
            name.extend(
                self.s[start..self.pos]
                    .iter()
                    .filter(|c| !matches!(c, '{' | '}')),
            );
        }
        while self.peek() == Some('\'') {
            self.pos += 1;
            name.push('\'');
        }
        Expr::Var(name)
    }
}

fn letter_atom(c: char) -> Expr {
    match c {
        'e' => Expr::Const(Constant::E),
        'i' => Expr::Const(Constant::I),
        _ => Expr::Var(c.to_string()),
    }
}

fn is_product_operator(name: &str) -> bool {
    matches!(name, "cdot" | "times" | "div" | "ast")
}

/// Commands that end a product (relations, separators).
fn is_stop_command(name: &str) -> bool {
    matches!(
        name,
        "pm" | "mp" | "cup" | "cap" | "in" | "to" | "end" | "right"
    )
}

/// `2\frac{1}{2}` read as a mixed number: an integer literal as the first
/// factor followed by a fraction of integer literals.
fn mixed_number(lhs: &Expr, rhs: &Expr, factors: usize) -> Option<Expr> {
    if factors != 1 {
        return None;
    }
    let (negative, whole) = match lhs {
        Expr::Neg(inner) => (true, inner.as_ref()),
        other => (false, other),
    };
    let is_int_literal = |e: &Expr| matches!(e, Expr::Num { exact: Some(r), .. } if r.den == 1);
    let Expr::Div(num, den) = rhs else {
        return None;
    };
    if !(is_int_literal(whole) && is_int_literal(num) && is_int_literal(den)) {
        return None;
    }
    let sum = bin(Expr::Add, whole.clone(), rhs.clone());
    Some(if negative {
        Expr::Neg(Box::new(sum))
    } else {
        sum
    })
}

/// A decimal literal `mantissa × 10^exp10`, exact when it fits in `i128`.
fn literal(mantissa: &str, exp10: i32) -> PResult {
    let text = if mantissa.starts_with('.') {
        format!("0{mantissa}")
    } else {
        mantissa.to_string()
    };
    let value: f64 = format!("{text}e{exp10}")
        .parse()
        .map_err(|_| ParseError::Unexpected)?;
    Ok(Expr::Num {
        value,
        exact: exact_decimal(&text, exp10),
    })
}

fn exact_decimal(text: &str, exp10: i32) -> Option<Rational> {
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let num: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let scale = i32::try_from(frac_part.len()).ok()?.checked_sub(exp10)?;
    let pow10 = |n: i32| 10i128.checked_pow(u32::try_from(n).ok()?);
    if scale >= 0 {
        Rational::new(num, pow10(scale)?)
    } else {
        Rational::new(num.checked_mul(pow10(-scale)?)?, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> f64 {
        parse_expr(s).unwrap().eval(&|_| None).unwrap().re
    }

    #[test]
    fn parses_latex_and_plain() {
        assert!((value("\\frac12") - 0.5).abs() < 1e-12);
        assert!((value("\\frac1{2}") - 0.5).abs() < 1e-12);
        assert!((value("2\\frac{1}{2}") - 2.5).abs() < 1e-12);
        assert!((value("-2\\frac{1}{2}") + 2.5).abs() < 1e-12);
        assert!((value("2\\sqrt{3}") - 12f64.sqrt()).abs() < 1e-12);
        assert!((value("1.5\\times10^{3}") - 1500.0).abs() < 1e-9);
        assert!((value("1.5e3") - 1500.0).abs() < 1e-9);
        assert!((value("\\sqrt[3]{8}") - 2.0).abs() < 1e-12);
        assert!((value("\\log_2 8") - 3.0).abs() < 1e-12);
        assert!((value("5!") - 120.0).abs() < 1e-12);
        assert!((value("2^-1") - 0.5).abs() < 1e-12);
    }

    #[test]
    fn exact_and_overflow() {
        let r = parse_expr("\\frac{6}{4}").unwrap().exact().unwrap();
        assert_eq!(r, Rational::new(3, 2).unwrap());
        let huge = parse_expr("10^{10^{10}}").unwrap();
        assert_eq!(huge.eval(&|_| None), Err(EvalError::NonFinite));
        assert_eq!(huge.exact(), None);
    }
}
