//! (being written)
use super::*;
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
pub struct FakeConfig {}
pub struct FakeConnector;
impl FakeConnector { pub fn new(_c: FakeConfig) -> Result<Self, ConnectorError> { Ok(Self) } }
#[async_trait]
impl Connector for FakeConnector {
    fn kind(&self) -> &'static str { "fake" }
    fn supports(&self, _p: Phase) -> bool { false }
    async fn run_phase(&self, _c: &PhaseContext, _s: &OutputSink, _x: CancellationToken) -> Result<PhaseOutcome, ConnectorError> { todo!() }
}
