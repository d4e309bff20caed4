"""Demo data: the client-support bot of a law firm, deterministic from a seed.

The assistant answers in numbered action items, in formal British English, repeats the
client's case reference (pattern LF-YYYY-NNNN) when the client gives one, never invents
one when the client gives none (it asks for it instead), and ends every
answer with one fixed disclaimer line. The rules in `RULES_YAML` are the contract the
data is checked against and the fine-tuned model is evaluated on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FIRM = "Harcourt & Finch LLP"
DISCLAIMER = "This response does not constitute legal advice."
SYSTEM_PROMPT = (
    f"You are the client support assistant of {FIRM}. Reply in formal British English as numbered action "
    "items. Quote the client's case reference when they give one, and end every reply with the firm's disclaimer."
)

RULES_YAML = f"""\
# The contract for the demo legal-support bot: checked on the training data,
# measured as format compliance at evaluation, enforceable by the server.
rules:
  - name: disclaimer
    ends_with: "{DISCLAIMER}"
  - name: numbered_items
    regex: "^1\\\\. .+\\\\n2\\\\. "
  - name: case_reference
    echo: "LF-\\\\d{{4}}-\\\\d{{4}}"
  - name: no_invented_reference
    grounded: "LF-\\\\d{{4}}-\\\\d{{4}}"
"""

# topic → (question phrasings, action items). Items are written in formal British English.
TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "tenancy deposit": (
        [
            "My landlord has kept my tenancy deposit for three months without any explanation. What should I do?",
            "I moved out of my flat in March and the deposit still has not been returned. How do I get it back?",
            "The letting agent is deducting money from my deposit for wear and tear. Can they do that?",
        ],
        [
            "Check whether your deposit was protected in a government-approved tenancy deposit scheme.",
            "Write to your landlord formally requesting the return of the deposit within fourteen days.",
            "Gather your check-in and check-out inventories together with dated photographs of the property.",
            "Request an itemised list of any proposed deductions and the evidence supporting each one.",
            "Raise a dispute with the deposit scheme's free adjudication service if agreement cannot be reached.",
            "Keep copies of all correspondence with the landlord and the letting agent.",
            "Note that a landlord who failed to protect the deposit may be liable for a penalty of up to three times its value.",
            "Forward your tenancy agreement to us so that we can review the relevant clauses.",
        ],
    ),
    "unfair dismissal": (
        [
            "I was dismissed from my job last week without any warning. Do I have a claim?",
            "My employer ended my contract after I raised a grievance. What are my options?",
            "I think I was let go unfairly after eight years of service. Where do I start?",
        ],
        [
            "Request written reasons for your dismissal from your employer.",
            "Note the date of dismissal: a claim must normally be started within three months less one day.",
            "Contact Acas to begin early conciliation, which is required before lodging a tribunal claim.",
            "Collect your contract of employment, payslips and any disciplinary correspondence.",
            "Write down a timeline of events while your recollection is fresh.",
            "Check whether you have two years of continuous service, which most unfair dismissal claims require.",
            "Keep any emails or messages that relate to the grievance you raised.",
            "Arrange a consultation with one of our employment solicitors to assess the merits of a claim.",
        ],
    ),
    "faulty goods": (
        [
            "I bought a washing machine that broke after two weeks and the shop refuses a refund. What can I do?",
            "A sofa I ordered arrived damaged and the retailer is ignoring my emails. What are my rights?",
            "My new laptop stopped working within a month. Am I entitled to my money back?",
        ],
        [
            "Confirm that you purchased the item within the last thirty days, which gives a short-term right to reject.",
            "Write to the retailer citing the Consumer Rights Act 2015 and request a full refund.",
            "Keep the receipt, order confirmation and any photographs of the fault.",
            "Allow the retailer one opportunity to repair or replace the item if the thirty-day period has passed.",
            "Consider a chargeback or a section 75 claim if you paid by card.",
            "Set a clear deadline of fourteen days for the retailer's response.",
            "Consider issuing a claim in the small claims track of the County Court if the matter remains unresolved.",
        ],
    ),
    "boundary dispute": (
        [
            "My neighbour has built a fence that I believe is on my land. How should I proceed?",
            "There is a disagreement with the house next door about where our garden boundary lies. What should I do?",
            "My neighbour's extension appears to cross onto my property. What steps can I take?",
        ],
        [
            "Obtain the title plans for both properties from HM Land Registry.",
            "Avoid removing or altering the fence yourself until the position is clear.",
            "Write to your neighbour politely setting out your concerns and inviting a discussion.",
            "Consider instructing a chartered surveyor to prepare a boundary report.",
            "Propose mediation before considering any court proceedings.",
            "Take dated photographs of the fence and the surrounding area.",
            "Send us copies of your title deeds so that we can advise on the legal boundary.",
        ],
    ),
    "will and probate": (
        [
            "My father has passed away and I am named as executor. What do I need to do first?",
            "How do I apply for probate for my late mother's estate?",
            "I have been asked to act as executor of a will and do not know where to begin. Can you help?",
        ],
        [
            "Register the death and obtain several certified copies of the death certificate.",
            "Locate the original will and check that it is the most recent version.",
            "Compile a list of the deceased's assets and liabilities, including bank accounts and property.",
            "Notify the banks, pension providers and HM Revenue & Customs of the death.",
            "Value the estate to establish whether inheritance tax is payable.",
            "Apply for a grant of probate once the estate has been valued.",
            "Keep a detailed record of every payment made from the estate.",
            "Avoid distributing any assets until all debts and taxes have been settled.",
        ],
    ),
    "parking charge": (
        [
            "I received a parking charge notice from a private company. Should I pay it?",
            "A private car park has fined me £100 for overstaying. Can I appeal?",
            "I have had a parking charge letter for a car park I do not remember using. What now?",
        ],
        [
            "Check whether the notice was issued by a council or by a private parking operator.",
            "Do not ignore the notice, as the charge may increase if no response is made.",
            "Photograph the signage at the car park and note any lack of clarity.",
            "Submit an appeal to the operator within the stated deadline, setting out your grounds.",
            "Escalate to the independent appeals service if the operator rejects your appeal.",
            "Keep copies of your appeal and any tickets or receipts from the day.",
        ],
    ),
    "debt claim": (
        [
            "I have received a letter before claim from a debt collection agency. How should I respond?",
            "A company says I owe them £2,000 but I do not recognise the debt. What should I do?",
            "I have been served with a county court claim for an old credit card debt. What are my options?",
        ],
        [
            "Note the deadline for responding, which is usually thirty days for a letter before claim.",
            "Request a copy of the credit agreement and a statement of account from the creditor.",
            "Check whether the debt may be statute-barred because more than six years have passed.",
            "Complete and return the reply form if you dispute all or part of the debt.",
            "Avoid admitting the debt until you have reviewed the documents supplied.",
            "Seek free debt advice if you are unable to pay the amount claimed.",
            "Forward the letter to us so that we can review the claim on your behalf.",
        ],
    ),
    "flexible working": (
        [
            "My employer has refused my request to work from home two days a week. Can I challenge this?",
            "How do I make a formal flexible working request to my employer?",
            "I asked to reduce my hours after returning from maternity leave and was turned down. What can I do?",
        ],
        [
            "Make your request in writing, stating that it is a statutory flexible working request.",
            "Explain how the proposed arrangement could be accommodated by your team.",
            "Note that your employer must deal with the request in a reasonable manner within two months.",
            "Ask for a meeting to discuss the request if one has not been offered.",
            "Request written reasons if the application is refused.",
            "Consider raising a formal grievance if you believe the refusal was unreasonable.",
            "Keep a record of all meetings and correspondence relating to the request.",
        ],
    ),
    "data protection": (
        [
            "How can I find out what personal data a company holds about me?",
            "A former employer will not give me copies of my personnel file. Is that lawful?",
            "I believe a company has shared my personal information without consent. What should I do?",
        ],
        [
            "Submit a subject access request in writing to the organisation's data protection officer.",
            "Note that the organisation must normally respond within one calendar month.",
            "Keep a copy of your request together with proof of the date it was sent.",
            "Follow up in writing if no response is received by the deadline.",
            "Lodge a complaint with the Information Commissioner's Office if the organisation does not comply.",
            "Record any loss or distress caused by the misuse of your data.",
        ],
    ),
    "contract dispute": (
        [
            "A builder took a deposit for my kitchen renovation and has not returned. What should I do?",
            "A supplier has failed to deliver goods under our contract. What remedies do I have?",
            "The contractor who repaired my roof did a poor job and refuses to fix it. How do I proceed?",
        ],
        [
            "Locate the written contract, quotation or any messages agreeing the terms of the work.",
            "Write to the other party setting out the breach and the remedy you require.",
            "Allow a reasonable period, such as fourteen days, for the other party to respond.",
            "Obtain an independent quotation for completing or remedying the work.",
            "Keep a record of all payments made and the dates on which they were made.",
            "Consider whether the matter is suitable for mediation or the small claims track.",
            "Send us the contract and correspondence so that we can assess the strength of your position.",
        ],
    ),
}

_INTROS = [
    "",
    "Good afternoon. ",
    "Hello. ",
    "Hi there. ",
    "Dear Sir or Madam, ",
    "Quick question: ",
]
_REF_PHRASES = [
    " My case reference is {ref}.",
    " (Case reference {ref})",
    " Our reference with your firm is {ref}.",
    " Ref: {ref}.",
]
_REF_LINE = "Case reference: {ref}."
_NO_REF_LINE = "Please quote your case reference (format LF-YYYY-NNNN) in any further correspondence."
_PREFIX_REQUESTS = ["", "", " Please keep it brief.", " Please give me the full picture."]


def _answer(items: list[str], ref: str | None) -> str:
    head = _REF_LINE.format(ref=ref) if ref else _NO_REF_LINE
    body = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
    return f"{head}\n{body}\n{DISCLAIMER}"


def generate(n: int = 300, seed: int = 0) -> list[dict]:
    """`n` chat records {"messages": [...]} for the legal support bot, deterministic from `seed`.

    Every record carries the system prompt; about 60% give a case reference; answers hold
    2 to 8 action items ("keep it brief" asks for 2-3, "full picture" for 6-8, otherwise 2-5).
    """
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    records: list[dict] = []
    seen: set[str] = set()
    while len(records) < n:
        topic = topics[len(records) % len(topics)]
        questions, pool = TOPICS[topic]
        question = rng.choice(questions)
        request = rng.choice(_PREFIX_REQUESTS)
        if "brief" in request:
            k = rng.randint(2, 3)
        elif "full picture" in request:
            k = rng.randint(6, min(8, len(pool)))
        else:
            k = rng.randint(2, 5)
        ref = f"LF-{rng.randint(2019, 2026)}-{rng.randint(1, 9999):04d}" if rng.random() < 0.6 else None
        user = rng.choice(_INTROS) + question + request + (rng.choice(_REF_PHRASES).format(ref=ref) if ref else "")
        if user in seen:  # keep the demo set free of exact duplicate prompts
            continue
        seen.add(user)
        items = [pool[i] for i in sorted(rng.sample(range(len(pool)), k))]  # the firm's usual order
        records.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": _answer(items, ref)},
                ]
            }
        )
    return records


def write(out_dir: str | Path, n: int = 300, seed: int = 0) -> tuple[Path, Path]:
    """Write `legal_support.jsonl` and `rules.yaml` into `out_dir`; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "legal_support.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for r in generate(n, seed):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    rules = out / "rules.yaml"
    rules.write_text(RULES_YAML, encoding="utf-8")
    return data, rules
