//! The seed's demonstration tools (`get_time`, `calculator`, `echo`), shared by the examples
//! (direct HTTP and reverse) and the benchmark, so every way of reaching a server is measured
//! against the same tools.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_protocol::mcp::client_requests::{CreateMessageParams, ElicitParams, SamplingMessage};
use mcp_protocol::mcp::notifications::LoggingLevel;
use mcp_protocol::mcp::tools::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
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
///   ([`wait_cancel_observed`]);
/// - `whoami`: who is calling ([`RequestContext::identity`]) as JSON text, `null` when the
///   transport named nobody (the proxy's OAuth layer names the token's subject).
pub fn register_seed_tools(server: &Server, test_tools: bool) {
    server.register_typed_tool(
        tool_builder("get_time").with_description("Get the current system time"),
        |NoArgs {}, _ctx| async move {
            Ok(CallToolResult::text(format!(
                "Current time: {}",
                ctime(SystemTime::now())
            )))
        },
    );
    server.register_typed_tool(
        tool_builder("calculator").with_description("Perform basic arithmetic operations"),
        |args: Calculation, _ctx| async move {
            calculate(&args).map(|r| CallToolResult::text(format!("Result: {r:.6}")))
        },
    );
    server.register_typed_tool(
        tool_builder("echo").with_description("Echo back the provided text"),
        |args: Echo, _ctx| async move {
            Ok(CallToolResult::text(if args.uppercase {
                args.text.to_uppercase()
            } else {
                args.text
            }))
        },
    );
    if test_tools {
        server.register_typed_tool(
            tool_builder("whoami").with_description("Who is calling, as the proxy vouched for it"),
            |NoArgs {}, ctx| async move {
                Ok(CallToolResult::text(json!(ctx.identity()).to_string()))
            },
        );
        server.register_typed_tool(
            tool_builder("sleep")
                .with_description("Sleep for a number of seconds, then answer (for fault tests)"),
            |Sleep { seconds }, ctx| async move {
                let duration = wait_for(seconds)?;
                // Fault tests wait for this line to know the call is pending on the server.
                tracing::info!(seconds, "sleep tool started");
                tokio::select! {
                    () = tokio::time::sleep(duration) => {
                        Ok(CallToolResult::text(format!("Slept {seconds} seconds")))
                    }
                    () = ctx.cancelled() => Err(ToolError::new("cancelled")),
                }
            },
        );
        register_talk_back_tools(server);
    }
}

/// `get_time`'s arguments: none.
#[derive(Deserialize, JsonSchema)]
struct NoArgs {}

/// `calculator`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Calculation {
    /// Operation to perform
    operation: Operation,
    /// First operand
    a: f64,
    /// Second operand
    b: f64,
}

/// What `calculator` does with its operands.
#[derive(Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Operation {
    Add,
    Subtract,
    Multiply,
    Divide,
}

/// `echo`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Echo {
    /// Text to echo
    text: String,
    /// Convert to uppercase
    #[serde(default)]
    uppercase: bool,
}

/// `sleep`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Sleep {
    /// How long to sleep
    seconds: f64,
}

/// `progress`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Progress {
    /// How many progress notifications to send
    #[serde(default = "three")]
    steps: u64,
}

fn three() -> u64 {
    3
}

/// `sample`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Sample {
    /// What to ask the model
    prompt: String,
}

/// `elicit`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct Elicit {
    /// What to tell the user
    message: String,
}

/// `wait_cancel`'s arguments.
#[derive(Deserialize, JsonSchema)]
struct WaitCancel {
    /// The longest wait (default 600)
    #[serde(default = "ten_minutes")]
    seconds: f64,
}

fn ten_minutes() -> f64 {
    600.0
}

/// A test tool's wait, refused outside 0..=3600 seconds.
fn wait_for(seconds: f64) -> Result<Duration, ToolError> {
    if !(0.0..=3600.0).contains(&seconds) {
        return Err(ToolError::new("seconds must be between 0 and 3600"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The test tools that talk back to the client: `progress`, `sample`, `elicit`, `wait_cancel`.
fn register_talk_back_tools(server: &Server) {
    server.register_typed_tool(
        tool_builder("progress")
            .with_description("Report progress and log, then answer (for talk-back tests)"),
        |Progress { steps }, ctx| async move {
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
    server.register_typed_tool(
        tool_builder("sample")
            .with_description("Ask the client's model and answer with its text (sampling)"),
        |Sample { prompt }, ctx| async move {
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
    server.register_typed_tool(
        tool_builder("elicit").with_description(
            "Ask the user for a name and answer with what they did (elicitation)",
        ),
        |Elicit { message }, ctx| async move {
            let answer = ctx
                .elicit(ElicitParams {
                    message,
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
    server.register_typed_tool(
        tool_builder("wait_cancel")
            .with_description("Wait until cancelled (for cancellation tests)"),
        |WaitCancel { seconds }, ctx| async move {
            let duration = wait_for(seconds)?;
            // The server drops a cancelled handler's future; the guard sees the token on drop.
            let _observer = CancelObserver::new(&ctx);
            tracing::info!("wait_cancel started");
            // Tells the client the handler runs, and which id `notifications/cancelled` names.
            ctx.log(
                LoggingLevel::Info,
                json!({"message": "wait_cancel started", "requestId": ctx.request_id()}),
            );
            tokio::select! {
                () = tokio::time::sleep(duration) => {
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
fn calculate(args: &Calculation) -> Result<f64, ToolError> {
    let (a, b) = (args.a, args.b);
    match args.operation {
        Operation::Add => Ok(a + b),
        Operation::Subtract => Ok(a - b),
        Operation::Multiply => Ok(a * b),
        Operation::Divide if b == 0.0 => Err(ToolError::new("Division by zero")),
        Operation::Divide => Ok(a / b),
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
        let args = |op: &str, a: f64, b: f64| -> Calculation {
            serde_json::from_value(json!({"operation": op, "a": a, "b": b})).unwrap()
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
        let modulo = json!({"operation": "modulo", "a": 1, "b": 2});
        assert!(serde_json::from_value::<Calculation>(modulo).is_err());
    }

    #[test]
    fn the_typed_schemas_match_what_the_builder_wrote() {
        // The seed's schemas, as `tool_builder` wrote them before the tools were typed.
        let calculator = crate::typed::input_schema_for::<Calculation>();
        assert_eq!(calculator["required"], json!(["operation", "a", "b"]));
        assert_eq!(
            calculator["properties"]["operation"],
            json!({
                "description": "Operation to perform",
                "type": "string",
                "enum": ["add", "subtract", "multiply", "divide"],
            })
        );
        assert_eq!(calculator["properties"]["a"]["type"], "number");
        let echo = crate::typed::input_schema_for::<Echo>();
        assert_eq!(echo["required"], json!(["text"]));
        assert_eq!(echo["properties"]["uppercase"]["type"], "boolean");
        assert_eq!(
            crate::typed::input_schema_for::<NoArgs>(),
            json!({"type": "object", "properties": {}})
        );
    }
}
