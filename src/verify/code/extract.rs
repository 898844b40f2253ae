//! Pulling the program out of a completion: the last fenced code block after `</think>` whose
//! language tag is Python (`python`, `py`, `python3`) or absent. Fallbacks, in order: an
//! unclosed last fence (a cut-off answer) counts from the fence to the end; without any fence,
//! the whole answer counts as code when one of its lines starts with `def `, `class `,
//! `import ` or `from `. A completion that opened `<think>` and never closed it has no code,
//! nor has a final block tagged with another language only.

/// Python's fence tags.
const PYTHON_TAGS: [&str; 4] = ["", "python", "py", "python3"];

/// The program in `trace` (see the module docs), or `None`.
pub fn extract_code(trace: &str) -> Option<String> {
    let answer = match trace.rfind("</think>") {
        Some(end) => &trace[end + "</think>".len()..],
        None if trace.contains("<think>") => return None,
        None => trace,
    };
    let blocks = fenced_blocks(answer);
    if !blocks.is_empty() {
        return blocks
            .into_iter()
            .rev()
            .find(|(tag, code)| PYTHON_TAGS.contains(&tag.as_str()) && !code.trim().is_empty())
            .map(|(_, code)| code);
    }
    let looks_like_code = answer.lines().any(|line| {
        ["def ", "class ", "import ", "from "]
            .iter()
            .any(|start| line.starts_with(start))
    });
    looks_like_code.then(|| answer.trim().to_string())
}

/// `(lowercased language tag, code)` of every ``` block of `text` in order; an unclosed last
/// fence runs to the end.
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag.trim().to_lowercase(), Vec::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                let (tag, lines) = open.take().expect("a block is open");
                blocks.push((tag, lines.join("\n")));
            }
            (Some((_, lines)), _) => lines.push(line),
            (None, None) => {}
        }
    }
    if let Some((tag, lines)) = open {
        blocks.push((tag, lines.join("\n")));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_python_block_after_think_wins() {
        let trace = "<think>```python\nbad()\n```</think>Here:\n```python\nx = 1\n```\nand\n```py\ndef f():\n    return 2\n```\n```text\nnot code\n```";
        assert_eq!(
            extract_code(trace).as_deref(),
            Some("def f():\n    return 2")
        );
    }

    #[test]
    fn fallbacks_and_refusals() {
        assert_eq!(
            extract_code("</think>\n```python\ndef f():\n    return 1").as_deref(),
            Some("def f():\n    return 1")
        );
        assert_eq!(
            extract_code("</think>def f():\n    return 3\n").as_deref(),
            Some("def f():\n    return 3")
        );
        assert_eq!(extract_code("<think>def f(): pass"), None);
        assert_eq!(extract_code("</think>The answer is 4."), None);
        assert_eq!(extract_code("</think>```cpp\nint main() {}\n```"), None);
        assert_eq!(extract_code("</think>```python\n\n```"), None);
    }
}
