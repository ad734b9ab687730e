//! (being written)
use super::*;
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
pub struct CommandConfig {}
pub struct CommandConnector;
impl CommandConnector { pub fn new(_c: CommandConfig) -> Result<Self, ConnectorError> { Ok(Self) } }
#[async_trait]
impl Connector for CommandConnector {
    fn kind(&self) -> &'static str { "command" }
    fn supports(&self, _p: Phase) -> bool { false }
    async fn run_phase(&self, _c: &PhaseContext, _s: &OutputSink, _x: CancellationToken) -> Result<PhaseOutcome, ConnectorError> { todo!() }
}
