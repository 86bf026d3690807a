"""Task templates: named recipes of typed parameters and steps, planned into chained subtasks.

One module per concept, in dependency order:

    placeholders.py  ``{{parameter}}`` and ``{{steps.NAME.output.FIELD}}``: find, fill, resolve
    parameters.py    typed parameters and checking a create request's values against them
    definition.py    the template schema, its step types, and checking a definition
    builtin.py       the built-in templates (YAML files in the ``taskorch/templates/`` data folder)
    service.py       list, get, create, update and delete (built-in ones are read-only)
    planner.py       a ``{template, parameters}`` create request -> one subtask per step

Import from the module that holds a name. This file imports nothing, so the scheduler's use of
placeholders.py does not load the service's store and YAML modules.
"""
