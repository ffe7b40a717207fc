"""Evaluation and reports: `cocos eval` (`evaluate`), the paper's metrics (`metrics`), the run-folder layout (`runs`),
the report's tables and plots (`report`, `report_plots`, `report_paper`), the self-correction page
(`report_correction`) and the claims page (`claims`, `claims_stats`). Trains nothing."""
