//! Synthetic tasks, their chain-of-thought writer and the curriculum: determinism, gold
//! correctness and format.

use distill::data::cot::{long_cot, reasoning, short_answer};
use distill::data::curriculum::{Curriculum, CurriculumConfig};
use distill::data::schema::split_generation;
use distill::data::synth::{
    generate_task, generate_tasks, verify_countdown, TaskKind, TaskSpec, MAX_DIFFICULTY,
};

#[test]
fn tasks_are_deterministic_for_a_seed_and_differ_across_seeds() {
    for kind in TaskKind::ALL {
        let first = generate_tasks(kind, 3, 42, 20).unwrap();
        let again = generate_tasks(kind, 3, 42, 20).unwrap();
        let other = generate_tasks(kind, 3, 43, 20).unwrap();
        assert_eq!(first, again);
        assert_ne!(
            first.iter().map(|t| &t.problem).collect::<Vec<_>>(),
            other.iter().map(|t| &t.problem).collect::<Vec<_>>()
        );
        assert_eq!(first[7], generate_task(kind, 3, 42, 7).unwrap());
        assert_eq!(first[7].id, format!("synth-{}-d3-42-7", kind.name()));
    }
}

#[test]
fn a_known_task_keeps_its_text_and_answer() {
    let task = generate_task(TaskKind::Arithmetic, 2, 7, 0).unwrap();
    let TaskSpec::Arithmetic { start, steps } = &task.spec else {
        panic!("arithmetic task has an arithmetic spec");
    };
    assert_eq!(steps.len(), 3, "difficulty 2 has 3 steps");
    let mut value = *start;
    for step in steps {
        value = step.op.apply(value, step.operand).unwrap();
    }
    assert_eq!(task.answer, value.to_string());
    assert!(task.problem.starts_with(&format!("Start with {start}.")));
}

#[test]
fn linear_equation_gold_solves_the_equation() {
    for difficulty in 1..=MAX_DIFFICULTY {
        for task in generate_tasks(TaskKind::LinearEquation, difficulty, 5, 30).unwrap() {
            let TaskSpec::Linear { a, b, c, e, x } = task.spec else {
                panic!("linear task has a linear spec");
            };
            assert_eq!(a * x + b, c * x + e, "{}", task.problem);
            assert_eq!(task.answer, x.to_string());
            assert!(task.problem.starts_with("Solve for x: "));
        }
    }
}

#[test]
fn countdown_reference_answer_passes_the_verifier() {
    for difficulty in 1..=MAX_DIFFICULTY {
        for task in generate_tasks(TaskKind::Countdown, difficulty, 9, 30).unwrap() {
            let TaskSpec::Countdown {
                numbers, target, ..
            } = &task.spec
            else {
                panic!("countdown task has a countdown spec");
            };
            assert!(
                verify_countdown(&task.answer, numbers, *target),
                "{} -> {}",
                task.problem,
                task.answer
            );
            let problem = task.to_problem();
            assert_eq!(problem.metadata["target"], *target);
            assert_eq!(problem.metadata["verifier"], "countdown");
        }
    }
}

#[test]
fn countdown_verifier_rejects_wrong_value_reuse_and_missing_numbers() {
    let numbers = [2, 3, 4];
    assert!(verify_countdown("(2 + 4) * 3", &numbers, 18));
    assert!(verify_countdown("3 \\times (2 + 4) = 18", &numbers, 18));
    assert!(verify_countdown("4 / 2 * 3", &numbers, 6));
    assert!(!verify_countdown("(2 + 4) * 3", &numbers, 17));
    assert!(!verify_countdown("(2 + 4) * 4", &numbers, 24));
    assert!(!verify_countdown("6 * 3", &numbers, 18));
    assert!(!verify_countdown("(2 + 4) * 3 = 17", &numbers, 18));
    assert!(!verify_countdown("(2 + 4 * 3", &numbers, 14));
    assert!(!verify_countdown("2 / (4 - 4) + 3", &[2, 4, 4, 3], 3));
}

#[test]
fn long_cot_has_think_block_self_check_and_boxed_gold() {
    for kind in TaskKind::ALL {
        for task in generate_tasks(kind, 4, 1, 10).unwrap() {
            let text = long_cot(&task);
            assert!(text.starts_with("<think>\n"), "{text}");
            let (thought, answer) = split_generation(&text);
            assert_eq!(thought, reasoning(&task));
            assert!(thought.contains("Let me verify"), "{text}");
            assert_eq!(answer, format!("The answer is \\boxed{{{}}}.", task.answer));
            assert!(text.ends_with(&format!("</think>\n\n{answer}")));
            assert_eq!(short_answer(&task), answer);
            assert!(text.len() < 700, "trace stays short: {} chars", text.len());
        }
    }
}

#[test]
fn arithmetic_cot_steps_are_correct() {
    let task = generate_task(TaskKind::Arithmetic, 3, 11, 4).unwrap();
    let thought = reasoning(&task);
    for line in thought
        .lines()
        .filter(|l| !l.starts_with("Start") && !l.starts_with("Let"))
    {
        let (expression, result) = line.trim_end_matches('.').split_once(" = ").unwrap();
        let parts: Vec<&str> = expression.split(' ').collect();
        let (left, right): (i64, i64) = (parts[0].parse().unwrap(), parts[2].parse().unwrap());
        let expected = match parts[1] {
            "+" => left + right,
            "-" => left - right,
            "*" => left * right,
            _ => left / right,
        };
        assert_eq!(result, expected.to_string(), "{line}");
    }
}

#[test]
fn task_kinds_are_found_by_name() {
    for kind in TaskKind::ALL {
        assert_eq!(TaskKind::from_name(kind.name()).unwrap(), kind);
    }
    let message = TaskKind::from_name("sudoku").unwrap_err().to_string();
    assert!(message.contains("`sudoku`"), "{message}");
}

#[test]
fn difficulty_outside_range_is_an_error() {
    assert!(generate_task(TaskKind::Countdown, 0, 1, 0).is_err());
    assert!(generate_task(TaskKind::Countdown, MAX_DIFFICULTY + 1, 1, 0).is_err());
}

#[test]
fn curriculum_raises_above_and_lowers_below_thresholds_within_bounds() {
    let config = CurriculumConfig::default();
    assert_eq!((config.raise_above, config.lower_below), (0.8, 0.3));
    let mut curriculum = Curriculum::new(config, 1).unwrap();
    let rates = [0.9, 0.95, 0.5, 0.81, 0.1, 0.29, 0.3, 0.0, 0.0];
    let difficulties: Vec<u32> = rates
        .iter()
        .map(|rate| curriculum.observe(*rate).unwrap())
        .collect();
    assert_eq!(difficulties, vec![2, 3, 3, 4, 3, 2, 2, 1, 1]);
    let mut top = Curriculum::new(config, MAX_DIFFICULTY).unwrap();
    assert_eq!(top.observe(1.0).unwrap(), MAX_DIFFICULTY);
    assert!(top.observe(1.5).is_err());
    let inverted = CurriculumConfig {
        raise_above: 0.2,
        lower_below: 0.7,
        ..config
    };
    assert!(Curriculum::new(inverted, 1).is_err());
}
