"""Node types by NodeType enum value."""

from __future__ import annotations

from typecase.server.flow.nodes.agent import Agent
from typecase.server.flow.nodes.base import NodeSpec
from typecase.server.flow.nodes.code import Code
from typecase.server.flow.nodes.condition import Condition
from typecase.server.flow.nodes.end import End
from typecase.server.flow.nodes.http import HttpRequest
from typecase.server.flow.nodes.input import Input
from typecase.server.flow.nodes.knowledge import KnowledgeRetrieval
from typecase.server.flow.nodes.llm import LLM
from typecase.server.flow.nodes.output import Output
from typecase.server.flow.nodes.prompt import Prompt
from typecase.server.flow.nodes.start import Start
from typecase.server.flow.nodes.tool import Tool

SPECS: dict[int, NodeSpec] = {
    spec.type: spec
    for spec in (
        Start(),
        Input(),
        Prompt(),
        LLM(),
        KnowledgeRetrieval(),
        Condition(),
        HttpRequest(),
        Code(),
        Output(),
        End(),
        Agent(),
        Tool(),
    )
}
