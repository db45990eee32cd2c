"""The operator's web page of ``rxsinks serve`` and its JSON API (see
:mod:`rxsinks._service.ui._app`)."""

from ._app import OPERATOR_UI, IngestCounters, OperatorUI, endpoint_path, page_url, setup_ui

__all__ = ["OPERATOR_UI", "IngestCounters", "OperatorUI", "endpoint_path", "page_url", "setup_ui"]
