"""A comparable picture of what catbird installed in a database: schema
``catbird``'s functions, tables, columns, indexes, constraints, sequences and
types, their grants, the extension's members and its pg_dump configuration.

Normalised so that two databases compare equal when they hold the same
definitions: no OIDs, no database names, roles by name, column order ignored
(an upgrade appends columns that a fresh install has in the middle; nothing
in the engine depends on column positions).
"""

from __future__ import annotations

from typing import Any

import psycopg

# Each query returns rows of text; a section is the sorted list of its rows.
_SECTIONS: dict[str, str] = {
    "functions": """
        SELECT format('%s(%s) -> %s | kind=%s lang=%s volatile=%s strict=%s secdef=%s '
                      'leakproof=%s parallel=%s cost=%s rows=%s config=%s owner_is_ext_owner=%s',
                      p.proname, pg_get_function_arguments(p.oid),
                      pg_get_function_result(p.oid), p.prokind, l.lanname, p.provolatile,
                      p.proisstrict, p.prosecdef, p.proleakproof, p.proparallel, p.procost,
                      p.prorows, p.proconfig,
                      p.proowner = (SELECT extowner FROM pg_extension WHERE extname = 'catbird'))
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'catbird'::regnamespace
    """,
    "function bodies": """
        SELECT p.oid::regprocedure::text || ' md5=' || md5(p.prosrc)
          FROM pg_proc p WHERE p.pronamespace = 'catbird'::regnamespace
    """,
    "function comments": """
        SELECT p.oid::regprocedure::text || ': ' || d.description
          FROM pg_proc p JOIN pg_description d
            ON d.objoid = p.oid AND d.classoid = 'pg_proc'::regclass
         WHERE p.pronamespace = 'catbird'::regnamespace
    """,
    "function grants": """
        SELECT format('%s TO %s: %s%s', p.oid::regprocedure,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                      a.privilege_type, CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' END)
          FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
         WHERE p.pronamespace = 'catbird'::regnamespace
           AND a.grantee <> p.proowner
    """,
    "relations": """
        SELECT format('%s kind=%s persistence=%s options=%s', c.relname, c.relkind,
                      c.relpersistence, c.reloptions)
          FROM pg_class c WHERE c.relnamespace = 'catbird'::regnamespace
    """,
    "relation grants": """
        SELECT format('%s TO %s: %s', c.relname,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                      a.privilege_type)
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.relnamespace = 'catbird'::regnamespace AND a.grantee <> c.relowner
    """,
    "columns": """
        SELECT format('%s.%s %s notnull=%s default=%s identity=%s generated=%s collation=%s',
                      c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                      a.attcollation::regcollation)
          FROM pg_class c
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'catbird'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'c')
    """,
    "indexes": """
        SELECT pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace = 'catbird'::regnamespace
    """,
    "constraints": """
        SELECT format('%s %s %s', coalesce(c.relname, t.typname), k.conname,
                      pg_get_constraintdef(k.oid))
          FROM pg_constraint k
          LEFT JOIN pg_class c ON c.oid = k.conrelid
          LEFT JOIN pg_type t ON t.oid = k.contypid
         WHERE k.connamespace = 'catbird'::regnamespace
    """,
    "sequences": """
        SELECT format('%s type=%s start=%s inc=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                      c.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin,
                      s.seqmax, s.seqcache, s.seqcycle,
                      (SELECT r.relname || '.' || a.attname
                         FROM pg_depend d
                         JOIN pg_class r ON r.oid = d.refobjid
                         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
          FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
         WHERE c.relnamespace = 'catbird'::regnamespace
    """,
    "types": """
        SELECT format('%s type=%s %s', t.typname, t.typtype,
                      CASE t.typtype
                        WHEN 'e' THEN (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                         FROM pg_enum e WHERE e.enumtypid = t.oid)
                        WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod)
                        WHEN 'c' THEN (SELECT string_agg(a.attname || ' '
                                                         || format_type(a.atttypid, a.atttypmod),
                                                         ', ' ORDER BY a.attnum)
                                         FROM pg_attribute a
                                        WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                          AND NOT a.attisdropped)
                      END)
          FROM pg_type t
         WHERE t.typnamespace = 'catbird'::regnamespace
           AND t.typtype IN ('c', 'e', 'd')
           AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
    """,
    "triggers": """
        SELECT pg_get_triggerdef(g.oid)
          FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
         WHERE c.relnamespace = 'catbird'::regnamespace AND NOT g.tgisinternal
    """,
    "schema": """
        SELECT format('catbird owner_is_ext_owner=%s', n.nspowner = e.extowner)
          FROM pg_namespace n, pg_extension e
         WHERE n.nspname = 'catbird' AND e.extname = 'catbird'
        UNION ALL
        SELECT format('catbird USAGE TO %s: %s',
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                      a.privilege_type)
          FROM pg_namespace n, aclexplode(n.nspacl) a
         WHERE n.nspname = 'catbird' AND a.grantee <> n.nspowner
    """,
    # Objects in schema catbird that are not members of the extension (none
    # should be), and members outside it.
    "extension members": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
          FROM pg_depend d
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'catbird')
    """,
    "pg_dump configuration": """
        SELECT format('%s where=%s', c.relname, x.condition)
          FROM pg_extension e,
               unnest(e.extconfig, e.extcondition) AS x(reloid, condition)
          JOIN pg_class c ON c.oid = x.reloid
         WHERE e.extname = 'catbird'
    """,
    # What pg_dump records as the extension's own privileges (GRANT/REVOKE
    # run by an install or update script).
    "initial privileges": """
        SELECT format('%s: %s', pg_describe_object(i.classoid, i.objoid, i.objsubid),
                      (SELECT string_agg(g.grant, ',' ORDER BY g.grant)
                         FROM (SELECT format('%s=%s',
                                             CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                  ELSE a.grantee::regrole::text END,
                                             a.privilege_type) AS grant
                                 FROM aclexplode(i.initprivs) a) g))
          FROM pg_init_privs i
         WHERE i.privtype = 'e'
           AND (i.classoid, i.objoid) IN (
               SELECT d.classid, d.objid FROM pg_depend d
                WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'catbird'))
    """,
}


def snapshot(conn: psycopg.Connection[Any], *, extension: bool = True) -> dict[str, list[str]]:
    """Every section as a sorted list of text lines. Without ``extension``
    (a plain install) the sections about the extension object are left out."""
    result: dict[str, list[str]] = {}
    for name, query in _SECTIONS.items():
        if not extension and name in (
            "schema",
            "extension members",
            "pg_dump configuration",
            "initial privileges",
        ):
            continue
        if not extension:
            query = query.replace(
                "(SELECT extowner FROM pg_extension WHERE extname = 'catbird')",
                "(SELECT nspowner FROM pg_namespace WHERE nspname = 'catbird')",
            )
        result[name] = sorted(str(row[0]) for row in conn.execute(query).fetchall())
    return result


def differences(left: dict[str, list[str]], right: dict[str, list[str]]) -> list[str]:
    """Readable lines for what differs: '-' only in left, '+' only in right."""
    out: list[str] = []
    for name in left.keys() | right.keys():
        a, b = set(left.get(name, [])), set(right.get(name, []))
        for line in sorted(a - b):
            out.append(f"{name}: - {line}")
        for line in sorted(b - a):
            out.append(f"{name}: + {line}")
    return sorted(out)
