"""SGLang external model package: ``SGLANG_EXTERNAL_MODEL_PACKAGE=glm52_plugin.sglang.models``.

SGLang registers each module's ``EntryClass`` by class name, so ours replace the in-tree classes of
the same name. Our ``sglang.srt.plugins`` entry point does the same without the variable. Keep this
package flat (SGLang skips sub-packages) and this file free of imports (SGLang imports it first).
"""
