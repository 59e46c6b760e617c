//! The seed's demonstration tools (`get_time`, `calculator`, `echo`), shared by the examples
//! (direct HTTP and reverse) and the benchmark, so every way of reaching a server is measured
//! against the same tools.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_protocol::mcp::client_requests::{CreateMessageParams, ElicitParams, SamplingMessage};
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::tools::CallToolResult;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{tool_builder, RequestContext, Server, ToolError};

/// How many `wait_cancel` calls have seen their cancellation token fire, in this process.
static WAIT_CANCEL_OBSERVED: AtomicUsize = AtomicUsize::new(0);

/// How many `wait_cancel` calls (a test tool) have observed their cancellation so far.
pub fn wait_cancel_observed() -> usize {
    WAIT_CANCEL_OBSERVED.load(Ordering::SeqCst)
}

/// Registers the seed's three tools: `get_time` (`"Current time: <ctime>"`), `calculator`
/// ("Result: 42.000000"; division by zero is a tool error) and `echo` (text, optional
/// uppercase). With `test_tools`, also, for fault and talk-back tests:
/// - `sleep` (`seconds`): answers when done, fails when cancelled;
/// - `progress` (`steps`, default 3): sends that many `notifications/progress` with the
///   request's progress token and one info log message, then answers `"done after N steps"`;
/// - `sample` (`prompt`): asks the client's model (`sampling/createMessage`) and answers with
///   the text it got;
/// - `elicit` (`message`): asks the user for a `name` (`elicitation/create`) and answers with
///   `{"action": ..., "content": ...}` as JSON text;
/// - `wait_cancel` (`seconds`, default 600): sends the client the info log message
///   `{"message": "wait_cancel started", "requestId": <its id>}`, then waits until cancelled;
///   when its token fires it logs "wait_cancel observed cancellation" (tracing) and counts it
///   ([`wait_cancel_observed`]).
pub fn register_seed_tools(server: &Server, test_tools: bool) {
    server.register_tool(
        tool_builder("get_time")
            .with_description("Get the current system time")
            .build(),
        |_args, _ctx| async move {
            Ok(CallToolResult::text(format!(
                "Current time: {}",
                ctime(SystemTime::now())
            )))
        },
    );
    server.register_tool(
        tool_builder("calculator")
            .with_description("Perform basic arithmetic operations")
            .with_enum_param(
                "operation",
                "Operation to perform",
                ["add", "subtract", "multiply", "divide"],
                true,
            )
            .with_number_param("a", "First operand", true)
            .with_number_param("b", "Second operand", true)
            .build(),
        |args, _ctx| async move {
            calculate(&args).map(|r| CallToolResult::text(format!("Result: {r:.6}")))
        },
    );
    server.register_tool(
        tool_builder("echo")
            .with_description("Echo back the provided text")
            .with_string_param("text", "Text to echo", true)
            .with_boolean_param("uppercase", "Convert to uppercase", false)
            .build(),
        |args, _ctx| async move {
            let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
            let upper = args.get("uppercase").and_then(Value::as_bool) == Some(true);
            Ok(CallToolResult::text(if upper {
                text.to_uppercase()
            } else {
                text.to_owned()
            }))
        },
    );
    if test_tools {
        server.register_tool(
            tool_builder("sleep")
                .with_description("Sleep for a number of seconds, then answer (for fault tests)")
                .with_number_param("seconds", "How long to sleep", true)
                .build(),
            |args, ctx| async move {
                let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
                if !(0.0..=3600.0).contains(&seconds) {
                    return Err(ToolError::new("seconds must be between 0 and 3600"));
                }
                // Fault tests wait for this line to know the call is pending on the server.
                tracing::info!(seconds, "sleep tool started");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {
                        Ok(CallToolResult::text(format!("Slept {seconds} seconds")))
                    }
                    () = ctx.cancelled() => Err(ToolError::new("cancelled")),
                }
            },
        );
        register_talk_back_tools(server);
    }
}

/// The test tools that talk back to the client: `progress`, `sample`, `elicit`, `wait_cancel`.
fn register_talk_back_tools(server: &Server) {
    server.register_tool(
        tool_builder("progress")
            .with_description("Report progress and log, then answer (for talk-back tests)")
            .with_integer_param("steps", "How many progress notifications to send", false)
            .build(),
        |args, ctx| async move {
            let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(3);
            if steps > 1000 {
                return Err(ToolError::new("steps must be at most 1000"));
            }
            ctx.log(LoggingLevel::Info, "progress tool working");
            for step in 1..=steps {
                ctx.progress(
                    step as f64,
                    Some(steps as f64),
                    Some(format!("step {step} of {steps}")),
                );
            }
            Ok(CallToolResult::text(format!("done after {steps} steps")))
        },
    );
    server.register_tool(
        tool_builder("sample")
            .with_description("Ask the client's model and answer with its text (sampling)")
            .with_string_param("prompt", "What to ask the model", true)
            .build(),
        |args, ctx| async move {
            let prompt = args
                .get("prompt")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let answer = ctx
                .create_message(CreateMessageParams {
                    messages: vec![SamplingMessage::user_text(prompt)],
                    max_tokens: 100,
                    ..CreateMessageParams::default()
                })
                .await?;
            // A text block's text; any other content as its JSON.
            let text = match answer.content.get("text").and_then(Value::as_str) {
                Some(text) => text.to_owned(),
                None => answer.content.to_string(),
            };
            Ok(CallToolResult::text(text))
        },
    );
    server.register_tool(
        tool_builder("elicit")
            .with_description("Ask the user for a name and answer with what they did (elicitation)")
            .with_string_param("message", "What to tell the user", true)
            .build(),
        |args, ctx| async move {
            let message = args
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let answer = ctx
                .elicit(ElicitParams {
                    message: message.to_owned(),
                    requested_schema: Some(json!({
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    })),
                    ..ElicitParams::default()
                })
                .await?;
            Ok(CallToolResult::text(serde_json::to_string(&answer)?))
        },
    );
    server.register_tool(
        tool_builder("wait_cancel")
            .with_description("Wait until cancelled (for cancellation tests)")
            .with_number_param("seconds", "The longest wait (default 600)", false)
            .build(),
        |args, ctx| async move {
            let seconds = args.get("seconds").and_then(Value::as_f64).unwrap_or(600.0);
            if !(0.0..=3600.0).contains(&seconds) {
                return Err(ToolError::new("seconds must be between 0 and 3600"));
            }
            // The server drops a cancelled handler's future; the guard sees the token on drop.
            let _observer = CancelObserver::new(&ctx);
            tracing::info!("wait_cancel started");
            // Tells the client the handler runs, and which id `notifications/cancelled` names.
            ctx.log(
                LoggingLevel::Info,
                json!({"message": "wait_cancel started", "requestId": ctx.request_id()}),
            );
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {
                    Ok(CallToolResult::text("never cancelled"))
                }
                () = ctx.cancelled() => Err(ToolError::new("cancelled")),
            }
        },
    );
}

/// Records, when `wait_cancel` ends however it ends, whether its cancellation token fired.
struct CancelObserver(CancellationToken);

impl CancelObserver {
    fn new(ctx: &RequestContext) -> Self {
        CancelObserver(ctx.cancellation_token().clone())
    }
}

impl Drop for CancelObserver {
    fn drop(&mut self) {
        if self.0.is_cancelled() {
            WAIT_CANCEL_OBSERVED.fetch_add(1, Ordering::SeqCst);
            // Tests that run the server as a process wait for this line.
            tracing::info!("wait_cancel observed cancellation");
        }
    }
}

/// The seed's calculator: `a <operation> b`.
fn calculate(args: &Map<String, Value>) -> Result<f64, ToolError> {
    let number = |key: &str| {
        args.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| ToolError::new(format!("'{key}' must be a number")))
    };
    let (a, b) = (number("a")?, number("b")?);
    match args.get("operation").and_then(Value::as_str) {
        Some("add") => Ok(a + b),
        Some("subtract") => Ok(a - b),
        Some("multiply") => Ok(a * b),
        Some("divide") if b == 0.0 => Err(ToolError::new("Division by zero")),
        Some("divide") => Ok(a / b),
        other => Err(ToolError::new(format!(
            "Unknown operation {other:?}: use add, subtract, multiply or divide"
        ))),
    }
}

/// C's `ctime` layout (`Tue Nov 11 12:34:56 2025`), in UTC.
pub fn ctime(now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let index = |n: i64| usize::try_from(n).unwrap_or(0);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[index(days.rem_euclid(7))],
        MONTHS[index(month - 1)],
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_c() {
        // 2025-11-11 12:34:56 UTC, the seed's sample output.
        let t = UNIX_EPOCH + Duration::from_secs(1_762_864_496);
        assert_eq!(ctime(t), "Tue Nov 11 12:34:56 2025");
        assert_eq!(ctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(ctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn calculator_matches_the_seed() {
        let args = |op: &str, a: f64, b: f64| {
            serde_json::json!({"operation": op, "a": a, "b": b})
                .as_object()
                .unwrap()
                .clone()
        };
        assert_eq!(
            format!("{:.6}", calculate(&args("add", 15.0, 27.0)).unwrap()),
            "42.000000"
        );
        assert_eq!(
            calculate(&args("divide", 1.0, 0.0)).unwrap_err().message(),
            "Division by zero"
        );
        assert_eq!(calculate(&args("multiply", 6.0, 7.0)).unwrap(), 42.0);
        assert!(calculate(&args("modulo", 1.0, 2.0)).is_err());
    }
}
