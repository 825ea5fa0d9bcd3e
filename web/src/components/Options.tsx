import { oddKernel } from "../frames";

export const MODES = [
  { id: "blur", name: "Privacy blur", text: "A strong Gaussian blur over the object in every frame; the rest stays untouched." },
  { id: "pixelate", name: "Pixelate", text: "Large blocks over the object: clearly hidden, clearly edited." },
  { id: "fill", name: "Solid fill", text: "Covers the object with a flat patch of colour." },
  { id: "erase", name: "Erase", text: "Removes the object and fills in the background behind it, as if it was never there." },
] as const;

export interface EffectOptions {
  mode: string;
  blurKernel: number;
  marginPx: number;
}

export function Options({ value, onChange }: { value: EffectOptions; onChange: (v: EffectOptions) => void }) {
  return (
    <div className="options">
      <fieldset>
        <legend>Effect</legend>
        {MODES.map((m) => (
          <label key={m.id} className={`mode${value.mode === m.id ? " on" : ""}`}>
            <input type="radio" name="mode" value={m.id} checked={value.mode === m.id} onChange={() => onChange({ ...value, mode: m.id })} aria-describedby={`mode-${m.id}`} />
            <span className="mode-name">{m.name}</span>
            <span className="mode-text" id={`mode-${m.id}`}>
              {m.text}
            </span>
          </label>
        ))}
      </fieldset>
      <div className="sliders">
        <label>
          Blur strength: <strong>{value.blurKernel} px</strong>
          <input
            type="range"
            min={3}
            max={255}
            step={2}
            value={value.blurKernel}
            disabled={value.mode !== "blur"}
            onChange={(e) => onChange({ ...value, blurKernel: oddKernel(Number(e.target.value)) })}
            aria-describedby="blur-hint"
          />
          <span className="hint" id="blur-hint">
            Size of the blur kernel (99 is strong; privacy blur only).
          </span>
        </label>
        <label>
          Safety margin: <strong>{value.marginPx} px</strong>
          <input type="range" min={0} max={64} step={1} value={value.marginPx} onChange={(e) => onChange({ ...value, marginPx: Number(e.target.value) })} aria-describedby="margin-hint" />
          <span className="hint" id="margin-hint">
            How far beyond the object's edge the effect reaches (never less than the tracker's precision: about 10 px at 360p, 20 px at 720p).
          </span>
        </label>
      </div>
    </div>
  );
}
