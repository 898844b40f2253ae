//! Programmatic reasoning traces for synthetic tasks: a correct step-by-step chain of thought
//! with a self-check ("Let me verify: …") in the DeepSeek-R1 format
//! `<think>\n…\n</think>\n\nThe answer is \boxed{X}.` ([`long_cot`]), used to train the demo's
//! stand-in teacher, and the short answer without reasoning ([`short_answer`]) for the student
//! base. Texts are kept short: the demo model has a vocabulary of a few hundred tokens.

use super::synth::{chain_expression, linear_side, run_steps, Step, SynthTask, TaskSpec};

/// The closing sentence of every answer: `The answer is \boxed{X}.`
pub fn boxed_sentence(answer: &str) -> String {
    format!("The answer is \\boxed{{{answer}}}.")
}

/// The answer without reasoning: `The answer is \boxed{X}.`
pub fn short_answer(task: &SynthTask) -> String {
    boxed_sentence(&task.answer)
}

/// The full generation: `<think>\n{reasoning}\n</think>\n\nThe answer is \boxed{X}.`
pub fn long_cot(task: &SynthTask) -> String {
    format!(
        "<think>\n{}\n</think>\n\n{}",
        reasoning(task),
        boxed_sentence(&task.answer)
    )
}

/// The reasoning lines (the text inside `<think>…</think>`).
pub fn reasoning(task: &SynthTask) -> String {
    let lines = match &task.spec {
        TaskSpec::Arithmetic { start, steps } => arithmetic_lines(*start, steps),
        TaskSpec::Linear { a, b, c, e, x } => linear_lines(*a, *b, *c, *e, *x),
        TaskSpec::Countdown {
            numbers,
            target,
            first,
            steps,
        } => countdown_lines(numbers, *target, *first, steps),
    };
    lines.join("\n")
}

/// One line per step, `value op operand = next.` (e.g. `8 - 1 = 7.`).
pub fn step_lines(start: i64, steps: &[Step]) -> Vec<String> {
    let values = run_steps(start, steps);
    steps
        .iter()
        .zip(values.windows(2))
        .map(|(step, pair)| {
            format!(
                "{} {} {} = {}.",
                pair[0],
                step.op.symbol(),
                step.operand,
                pair[1]
            )
        })
        .collect()
}

fn arithmetic_lines(start: i64, steps: &[Step]) -> Vec<String> {
    let mut lines = vec![format!("Start with {start}.")];
    lines.extend(step_lines(start, steps));
    let values = run_steps(start, steps);
    let result = values.last().copied().unwrap_or(start);
    let undo: Vec<Step> = steps
        .iter()
        .rev()
        .map(|step| Step {
            op: step.op.inverse(),
            operand: step.operand,
        })
        .collect();
    let checks = step_lines(result, &undo).join(" ");
    lines.push(format!(
        "Let me verify by undoing the steps: {checks} That gives back {start}. Correct."
    ));
    lines
}

fn linear_lines(a: i64, b: i64, c: i64, e: i64, x: i64) -> Vec<String> {
    let mut lines = vec![format!("{} = {}.", linear_side(a, b), linear_side(c, e))];
    let k = a - c;
    if c != 0 {
        lines.push(format!(
            "Subtract {} from both sides: {} = {e}.",
            linear_side(c, 0),
            linear_side(k, b)
        ));
    }
    if b != 0 {
        let action = if b > 0 {
            format!("Subtract {b} from both sides")
        } else {
            format!("Add {} to both sides", -b)
        };
        lines.push(format!("{action}: {} = {}.", linear_side(k, 0), e - b));
    }
    if k != 1 {
        lines.push(format!("Divide both sides by {k}: x = {x}."));
    }
    let check = if c == 0 {
        format!("{}, which matches {e}.", evaluate_side(a, x, b))
    } else {
        format!(
            "left {}, right {}. Both sides match.",
            evaluate_side(a, x, b),
            evaluate_side(c, x, e)
        )
    };
    lines.push(format!("Let me verify: {check} Correct."));
    lines
}

/// `k * x + constant = value` with the solution substituted, e.g. `3 * (-4) - 5 = -17`.
fn evaluate_side(k: i64, x: i64, constant: i64) -> String {
    let x_text = if x < 0 {
        format!("({x})")
    } else {
        x.to_string()
    };
    let product = format!("{k} * {x_text}");
    let expression = match constant {
        0 => product,
        c if c < 0 => format!("{product} - {}", -c),
        c => format!("{product} + {c}"),
    };
    format!("{expression} = {}", k * x + constant)
}

fn countdown_lines(numbers: &[i64], target: i64, first: i64, steps: &[Step]) -> Vec<String> {
    let listed: Vec<String> = numbers.iter().map(i64::to_string).collect();
    let mut lines = vec![format!("Numbers {}. Target {target}.", listed.join(", "))];
    let sum: i64 = numbers.iter().sum();
    if sum != target {
        lines.push(format!(
            "Try adding all: {} = {sum}. Not {target}. Try another way.",
            listed.join(" + ")
        ));
    }
    lines.extend(step_lines(first, steps));
    lines.push(format!(
        "Let me verify: {} = {target}, using {} once each. Correct.",
        chain_expression(first, steps),
        listed.join(", ")
    ));
    lines
}
